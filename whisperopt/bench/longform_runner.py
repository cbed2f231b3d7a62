"""The long-form benchmark (``whisperopt bench --dataset librispeech-long:<split>[:hard]``): recipes x long-form modes x
long-form datasets, scored with ``metrics.longform`` (issue 25).

Each (recipe, mode, dataset) runs in its own process (``python -m whisperopt.bench.longform_runner --child JOB``, so
its peak memory is its own) through ``bench.longform.evaluate_longform``: one progress line per file; the file's
segments are appended to ``OUT/<recipe>.<mode>.<dataset>.transcripts.jsonl`` as it finishes (a re-run with the same
``--out`` resumes), the run's own figures to ``....run.json``. The parent re-scores every run from those files, pairs
each with the baseline recipe in sequential mode on the same files (paired bootstrap over files) and writes the
measured rows to ``OUT/longform.json``; the recommendation and summary.md/.csv/.json/.html are the report's
(``report.longform``, ``report.recommend.recommend_long``), as for the short-form bench.

A recipe is given as ``name`` (every mode of ``modes``) or ``name:mode+mode``. ``native`` is the engine's own
whole-file pipeline (recipes whose runtime has one, e.g. the faster-whisper peer row); a
recipe that has one runs only ``native``. train-clean-5 is not a test split (fine for Whisper, which was not trained
on LibriSpeech; the report says so).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..data import load_dataset
from ..errors import WhisperoptError
from ..files import atomic_write_json, confined, read_json
from ..metrics.bootstrap import LEVEL, RESAMPLES, SEED
from ..metrics.hardware import cpu_info
from ..recipes import DEFAULT_LONG_RECIPES, baseline_recipe, get_recipe
from .longform import LongformRun, evaluate_longform, mode_options, parse_mode
from .records import LongDataset, LongRow
from .results import read_rows

PREFIX = "librispeech-long:"
DEFAULT_MODES = "sequential,batched,vad"
RESULTS_FILE = "longform.json"  # the measured rows of a long-form bench, in its --out (report/longform.py reads it)


def is_longform(dataset: str) -> bool:
    """True when ``dataset`` (comma-separated specs) names long-form data, which the long-form bench runs."""
    return any(d.strip().startswith(PREFIX) for d in dataset.split(","))


def _paths(out: Path, recipe: str, mode: str, dataset: str) -> tuple[Path, Path]:
    stem = f"{recipe}.{mode}.{dataset}"
    return confined(out, f"{stem}.transcripts.jsonl"), confined(out, f"{stem}.run.json")


def child(job: dict) -> int:
    """One (recipe, mode, dataset): build (cached), load, evaluate; write the run record (or why it was skipped)."""
    from ..models import resolve_model
    from ..recipes.artifacts import build_artifact

    out, recipe = Path(job["out"]), get_recipe(job["recipe"])
    dataset = load_dataset(job["dataset"]).limit(job["limit"])
    transcripts, record_path = _paths(out, recipe.name, job["mode"], dataset.name)
    reason = recipe.unavailable_reason(job["device"])
    if reason:
        atomic_write_json(record_path, {"skipped": reason})
        return 0
    model = resolve_model(job["model"])
    artifact, _ = build_artifact(recipe, model.path, recipe.resolve_options({}), log=print)
    t0 = time.perf_counter()
    runtime = recipe.open(artifact, job["device"], job["threads"])
    load_s = time.perf_counter() - t0
    try:
        native = bool(runtime.native_long_form)
        if native != (parse_mode(job["mode"])[0] == "native"):
            why = "it runs its own long-form pipeline (mode native)" if native else "no long-form pipeline of its own"
            atomic_write_json(record_path, {"skipped": f"{recipe.name} {job['mode']}: {why}"})
            return 0
        options = {"batch_size": job["batch_size"]} if not native else None
        run = evaluate_longform(recipe, artifact, dataset, job["mode"], options, job["threads"], job["device"],
                                runtime=runtime, transcripts_path=transcripts, log=lambda s: print(s, flush=True))
    finally:
        runtime.close()
    earlier = read_json(record_path, "long-form run record") if record_path.exists() else {}
    run.load_s = load_s if run.resumed < len(run.files) else earlier.get("load_s", load_s)
    # a resumed run's files were decoded by several processes: the highest high-water mark of them
    run.peak_ram_mb = max(run.peak_ram_mb or 0, earlier.get("peak_ram_mb") or 0) or None
    atomic_write_json(record_path, run.record())
    return 0


def _complete(out: Path, recipe: str, mode: str, spec: str, limit: int | None) -> bool:
    """Whether an earlier run already decoded every file of this job (or skipped it): nothing to start again (a
    process started only to find every file done would record its own load-time peak over the decoding's)."""
    dataset = load_dataset(spec).limit(limit)
    transcripts, record_path = _paths(out, recipe, mode, dataset.name)
    if not record_path.exists():
        return False
    if "skipped" in read_json(record_path, "long-form run record"):
        return True
    done = {line["file"] for line in read_rows(transcripts, key="file")}  # a torn last line is not a file done
    return all(u.id in done for u in dataset.utterances)


def _runs(spec: str, modes: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, given = item.partition(":")
        wanted = given.split("+") if given else modes
        for mode in wanted:
            mode_options(mode)  # a bad mode or variant fails now, in one line
        out.append((get_recipe(name).name, wanted))
    return out


def _collect(out: Path, runs, datasets, limit, reference: str) -> dict[str, LongDataset]:
    blocks: dict[str, LongDataset] = {}
    for spec in datasets:
        ds = load_dataset(spec).limit(limit)
        rows: list[LongRow] = []
        done = {}
        for recipe, modes in runs:
            for mode in modes:
                transcripts, record_path = _paths(out, recipe, mode, ds.name)
                record = read_json(record_path, "long-form run record") if record_path.exists() else \
                    {"skipped": "not run (its process failed: see the log above)"}
                if "skipped" in record:
                    rows.append({"recipe": recipe, "mode": mode, "status": "skipped", "reason": record["skipped"]})
                    continue
                done[(recipe, mode)] = LongformRun.from_record(record, ds, transcripts)
        ref = done.get((reference, "sequential"))
        rows = [run.to_row(ref) for run in done.values()] + rows
        blocks[ds.name] = {"spec": spec, "files": len(ds.utterances), "reference": ref and f"{reference} sequential",
                           "audio_min": sum(u.longform.duration for u in ds.utterances) / 60,
                           "stretch_min": sum(u.longform.stretch_seconds for u in ds.utterances) / 60,
                           "rows": rows}
    return blocks


def _synthetic(model: str) -> bool:
    from ..models import resolve_model
    from ..models.synthetic import is_synthetic

    return is_synthetic(resolve_model(model).path)


def plan(recipes: str | None, modes: str, dataset: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The (recipe, modes) runs and the dataset specs of a long-form bench, checked: a bad recipe, mode or dataset
    name is a one-line error before anything runs. ``recipes`` None: ``DEFAULT_LONG_RECIPES``."""
    runs = _runs(recipes or DEFAULT_LONG_RECIPES, [m for m in modes.split(",") if m])
    datasets = [d.strip() for d in dataset.split(",") if d.strip()]
    for spec in datasets:
        if not spec.startswith(PREFIX):
            raise WhisperoptError(f"{spec}: a long-form bench takes only long-form datasets ({PREFIX}<split>[:hard])")
        load_dataset(spec)  # a bad name fails now, in one line
    return runs, datasets


def run_longform_bench(model: str, recipes: str | None, modes: str, dataset: str, limit: int | None, threads: int,
                       device: str, batch_size: int, out: Path,
                       log: Callable[[str], None] = print) -> dict:
    """Run every (recipe, mode, dataset) in its own process, then score and pair the runs and write them to
    ``out``/longform.json (returned): the report reads it."""
    runs, datasets = plan(recipes, modes, dataset)
    out.mkdir(parents=True, exist_ok=True)
    for spec in datasets:
        for recipe, wanted in runs:
            for mode in wanted:
                if _complete(out, recipe, mode, spec, limit):
                    continue
                job = {"model": model, "recipe": recipe, "mode": mode, "dataset": spec, "limit": limit,
                       "threads": threads, "device": device, "batch_size": batch_size, "out": str(out)}
                t = time.perf_counter()
                code = subprocess.run([sys.executable, "-m", "whisperopt.bench.longform_runner", "--child",
                                       json.dumps(job)]).returncode
                log(f"{recipe} {mode} {spec}: exit {code} after {time.perf_counter() - t:.0f} s")
    reference = baseline_recipe().name
    record = {"workload": "long", "model": model, "threads": threads, "device": device,
              "cpu": cpu_info().get("model"), "batch_size": batch_size, "synthetic": _synthetic(model), "baseline": reference,
              "units": {"wer": "percent", "wer_delta": "percentage points", "rtfx": "audio s per wall s",
                        "*_s": "seconds", "*_mb": "MiB", "stretch_words_change": "fraction of the reference's"},
              "bootstrap": {"resamples": RESAMPLES, "level": LEVEL, "seed": SEED, "unit": "file",
                            "interval": "percentile"},
              "datasets": _collect(out, runs, datasets, limit, reference)}
    if record["synthetic"]:  # random weights transcribe noise: speed and memory only
        for block in record["datasets"].values():
            for row in block["rows"]:
                row.update({k: None for k in row if k.startswith(("wer", "cer"))})
    atomic_write_json(out / RESULTS_FILE, record)
    return record


if __name__ == "__main__":  # the per-run child process
    if len(sys.argv) != 3 or sys.argv[1] != "--child":
        sys.exit("usage: python -m whisperopt.bench.longform_runner --child JOB_JSON")
    try:
        sys.exit(child(json.loads(sys.argv[2])))
    except WhisperoptError as exc:
        print(f"whisperopt: error: {exc}", file=sys.stderr)
        sys.exit(2)
