"""Benchmark settings, stored as run.json in the results directory so a re-run can resume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..constants import MAX_BATCH
from ..errors import WhisperoptError
from ..files import atomic_write_json, read_json
from ..metrics.hardware import default_threads
from ..models.resolve import exported_recipe
from ..recipes import DEFAULT_BENCH_RECIPES, parse_recipe_list
from ..recipes.base import DecodeOptions, Recipe, check_decode_limits
from ..transcribe.packing import DEFAULT_GAP_S, check_gap
from .records import RecipeStatus

DEFAULT_DATASET = "librispeech:test-clean"


def bench_recipes(model: str, recipes: str | None, modes_given: bool = False) -> list[Recipe]:
    """The recipes of a short-form bench, looked up once: ``recipes`` (comma-separated; with ``modes_given``, beside a
    long-form bench, ``NAME:MODE+MODE`` is NAME here), else an exported ``model``'s own recipe (``whisperopt
    export``), else ``DEFAULT_BENCH_RECIPES``."""
    if recipes and modes_given:
        recipes = ",".join(dict.fromkeys(x.split(":")[0] for x in recipes.split(",")))
    return parse_recipe_list(recipes or exported_recipe(model) or DEFAULT_BENCH_RECIPES)


@dataclass
class BenchConfig:
    model: str
    recipes: list[str]
    dataset: str = DEFAULT_DATASET
    limit: int | None = None
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    threads: int = field(default_factory=default_threads)
    device: str = "cpu"
    warmup: int = 1
    fidelity_utterances: int = 8
    recipe_options: dict[str, dict] = field(default_factory=dict)
    out_dir: Path = Path("whisperopt-results")
    verify: bool = False  # check cached artifacts' digests, not only their sizes
    # throughput mode: after the measured pass, each recipe decodes the same utterances again at these batch sizes
    throughput_batches: list[int] = field(default_factory=list)
    # --pack: after the measured pass, each recipe decodes the same utterances packed several to a 30-s window
    # (transcribe/packing.py) with this much silence after each clip, at the measured pass's batch size
    pack: bool = False
    pack_gap: float = DEFAULT_GAP_S
    # --ray: the Ray cluster to spread the work over ("auto": this machine's, else a new local one); None: local
    ray: str | None = None
    shard_size: int | None = None  # utterances per Ray task (None: distributed.DEFAULT_SHARD)

    def validate(self) -> None:
        if not self.recipes:
            raise WhisperoptError("no recipe given")
        if len(set(self.recipes)) != len(self.recipes):
            raise WhisperoptError(f"recipe listed twice in {','.join(self.recipes)!r}")
        if self.limit is not None and self.limit <= 0:
            raise WhisperoptError(f"--limit must be a positive number of utterances, got {self.limit}")
        if self.threads <= 0:
            raise WhisperoptError(f"--threads must be positive, got {self.threads}")
        check_decode_limits(beam_size=self.decode.beam_size, batch_size=self.decode.batch_size,
                            max_new_tokens=self.decode.max_new_tokens)
        if self.decode.task not in ("transcribe", "translate"):
            raise WhisperoptError(f"--task must be transcribe or translate, got {self.decode.task!r}")
        if self.device not in ("cpu", "cuda"):
            raise WhisperoptError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.warmup < 0:
            raise WhisperoptError(f"--warmup must be >= 0, got {self.warmup}")
        if self.fidelity_utterances < 0:
            raise WhisperoptError("--fidelity-utterances must be >= 0")
        for b in self.throughput_batches:
            if not 1 <= b <= MAX_BATCH:
                raise WhisperoptError(f"--throughput-batches: each batch size must be 1-{MAX_BATCH}, got {b}")
        if self.shard_size is not None and self.shard_size < 1:
            raise WhisperoptError(f"--shard-size must be at least 1 utterance, got {self.shard_size}")
        if self.shard_size is not None and self.ray is None:
            raise WhisperoptError("--shard-size sets the utterances per Ray task; it needs --ray")
        if len(set(self.throughput_batches)) != len(self.throughput_batches):
            raise WhisperoptError("--throughput-batches lists a batch size twice")
        check_gap(self.pack_gap)

    def extra_passes_done(self, status: RecipeStatus) -> bool:
        """Whether a recipe's status already holds every extra pass this run asks for (throughput batch sizes, the
        packed pass at this gap), so a re-run with all rows measured has nothing left to do for it."""
        batches = {t["batch"] for t in status.get("throughput") or []}
        packed = status.get("packed") or {}
        return set(self.throughput_batches) <= batches and (not self.pack or packed.get("gap_s") == self.pack_gap)

    def comparable_key(self) -> dict:
        """Settings that must match for a re-run to resume the rows already saved."""
        return {"model": self.model, "dataset": self.dataset, "decode": self.decode.to_dict(),
                "threads": self.threads, "device": self.device}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BenchConfig:
        d = dict(d)
        d["decode"] = DecodeOptions(**d["decode"])
        d["out_dir"] = Path(d["out_dir"])
        d.setdefault("throughput_batches", [])  # run.json of an earlier version
        d.setdefault("pack", False)
        d.setdefault("pack_gap", DEFAULT_GAP_S)
        d.setdefault("ray", None)
        d.setdefault("shard_size", None)
        return cls(**d)


_SAVED_TYPES = {"model": str, "dataset": str, "limit": (int, type(None)), "threads": int, "device": str,
                "warmup": int, "fidelity_utterances": int}


def _read_run(path: Path) -> dict:
    """run.json's saved config; a damaged one is a one-line error (the rows beside it are not trusted without it)."""
    from .results import result_name_problem

    data = read_json(path, "benchmark settings", "delete it to start the benchmark afresh, or use another --out")
    try:
        cfg = BenchConfig.from_dict(data["config"])
        problem = next((p for p in map(result_name_problem, cfg.recipes) if p), None) \
            if isinstance(cfg.recipes, list) else "'recipes' is not a list"
        problem = problem or next((f"{key!r} is {str(getattr(cfg, key))[:40]!r}" for key, kind in _SAVED_TYPES.items()
                                   if isinstance(getattr(cfg, key), bool) or not isinstance(getattr(cfg, key), kind)),
                                  None)
        cfg.validate()  # the values too: a run.json whisperopt did not write must not reach the report
    except WhisperoptError as exc:
        problem = str(exc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        raise WhisperoptError(f"benchmark settings {path} are not whisperopt's ({problem}); delete it to start the "
                              "benchmark afresh, or use another --out") from None
    return data


def save_run(cfg: BenchConfig) -> None:
    path = cfg.out_dir / "run.json"
    previous = _read_run(path) if path.exists() else None
    if previous is not None:
        old = BenchConfig.from_dict(previous["config"]).comparable_key()
        new = cfg.comparable_key()
        if old != new:
            diff = {k: (old[k], new[k]) for k in new if old.get(k) != new[k]}
            raise WhisperoptError(
                f"{cfg.out_dir} holds results of a different run ({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in diff.items())}); "
                f"use another --out or delete it"
            )
        recipes = list(dict.fromkeys(previous["config"]["recipes"] + cfg.recipes))
    else:
        recipes = cfg.recipes
    data = cfg.to_dict()
    data["recipes"] = recipes
    atomic_write_json(path, {"config": data})


def load_run(out_dir: Path) -> BenchConfig:
    path = Path(out_dir) / "run.json"
    if not path.exists():
        raise WhisperoptError(f"no benchmark results in {out_dir} (run.json missing)")
    return BenchConfig.from_dict(_read_run(path)["config"])
