"""Write one benchmarked recipe as a self-contained directory (``whisperopt export``).

Layout of ``OUT``:

* ``artifact/``: the files the engine loads, copied (never linked) from the cache, with the manifest they were built
  with; a recipe that runs another artifact's files (``-genai``, ``-batched``) or the checkpoint itself
  (torch-fp32) gets those files here, so the folder is complete on its own;
* the checkpoint's tokenizer, processor and config files (every runtime reads them from the model directory), and
  its weights only where the recipe's ``load`` reads them (``Recipe.loads_source_weights``);
* ``benchmark/``: the run's summary.json and the per-utterance rows of this recipe and of the baseline;
* ``whisperopt_export.json``: recipe, options, source model, the benchmark row, decode settings, environment,
  versions and every file's size and sha256 (``files``: the list of what the export wrote, besides itself and the
  card), with that table's own sha256 (``files_sha256``, which the card states too: ``models.export_record``);
* ``README.md``: the model card (``card.py``).

Every copied file is hashed as it is read and again on disk; where the build recorded a digest, it must match too,
so the directory holds exactly the bytes that were measured. Every relative path the results or a manifest name is
confined to its folder (``files.confined``); ``--overwrite`` replaces only a folder that holds exactly what an
earlier export listed (``target.py``).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..bench.records import RecipeStatus, read_status
from ..bench.results import recipe_paths
from ..errors import WhisperoptError, described, first_line
from ..files import atomic_dir, atomic_write_json, atomic_write_text, confined, read_json
from ..models.export_record import (
    CARD,
    ExportBenchmark,
    ExportBuild,
    ExportRecord,
    SourceModel,
    table_digest,
    write_export,
)
from ..models.sizes import SIZES
from ..models.vocabulary import Vocabulary
from ..recipes import Recipe, find_recipe, get_recipe
from ..recipes.artifacts import MANIFEST, artifact_path, damage, model_fingerprint, sha256_file
from ..report.records import Summary, SummaryRow, read_summary
from .target import check_target

EXPORT_FORMAT = "whisperopt-export/1"
ARTIFACT_DIR = "artifact"
EVIDENCE_DIR = "benchmark"
# what model_fingerprint counts as weights; everything below is the model directory's tokenizer/processor/config
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
SIDE_SUFFIXES = (".json", ".txt", ".tiktoken", ".model")
# manifest fields that are bookkeeping rather than what the build did (the rest is shown in the card)
BOOKKEEPING = {"recipe", "engine", "options", "source_model", "model_fingerprint", "built_at", "versions", "integrity",
               "validation", "build_seconds", "weights_dir", "base_artifact", "shared_artifact", "copied_files",
               "components"}
# organisations whose Whisper checkpoints are published under the MIT licence (OpenAI's weights, distil-whisper's)
MIT_ORGS = ("openai/", "distil-whisper/")


@dataclass
class ExportResult:
    out: Path
    recipe: str
    record: ExportRecord
    bytes: int


def _copy(src: Path, dst: Path, expected: str | None, what: str) -> dict:
    """Copy ``src`` (a link is followed) to ``dst``, hashing the bytes read; the copy on disk must hash the same,
    and so must ``expected`` (the digest the build recorded), or the export stops."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(1 << 22):
            h.update(chunk)
            fout.write(chunk)
    read = h.hexdigest()
    if expected is not None and read != expected:
        raise WhisperoptError(f"{src} has other bytes than its build recorded (sha256 differs): {what}")
    if sha256_file(dst) != read:
        raise WhisperoptError(f"the copy of {src} at {dst} does not read back the same (sha256 differs); check the disk")
    return {"bytes": dst.stat().st_size, "sha256": read}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _inside(root: Path, rel, what: str, links: bool = False) -> Path:
    """``root / rel`` for a name read from a results or manifest file: a plain relative path (not absolute, no
    ``..``), and, unless ``links`` (a source folder such as a hub snapshot, whose files are links into its blob
    store), not leading outside ``root`` through a link either. Anything else is one line, before any write."""
    p = Path(str(rel))
    try:
        if links and (not str(rel) or p.is_absolute() or ".." in p.parts or "\0" in str(rel)):
            raise WhisperoptError(f"{str(rel)!r} is not a plain relative path inside {root}")
        return Path(root) / p if links else confined(root, rel)
    except WhisperoptError as exc:
        raise WhisperoptError(f"refused: the {what} file list names a path outside its folder ({exc}); nothing was "
                              "written") from None


def _written(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


# --- reading the results ---

def select_row(summary: Summary, results_dir: Path, recipe: str | None, recommended: bool) -> SummaryRow:
    """The summary row to export: ``recipe``'s, or the recommendation's; a recipe that did not finish complete in
    that run is a one-line error."""
    rows = {r.get("recipe"): r for r in summary["recipes"] if isinstance(r, dict)}
    if recommended:
        rec = summary.get("recommendation") or {}
        if not rec.get("recipe"):
            ok = [n for n, r in rows.items() if r.get("status") == "ok"]
            raise WhisperoptError(f"{results_dir} has no recommended recipe ({rec.get('reason') or 'none saved'}); "
                                  f"export one with --recipe ({', '.join(ok) or 'no recipe finished'})")
        recipe = rec["recipe"]
    get_recipe(recipe)  # an unknown name is a one-line error listing the known ones
    if recipe not in rows:
        raise WhisperoptError(f"recipe {recipe} was not benchmarked in {results_dir} (it has: {', '.join(rows)})")
    row = rows[recipe]
    if row.get("status") != "ok":
        why = row.get("reason") or row.get("status")
        raise WhisperoptError(f"recipe {recipe} did not finish in that run ({row.get('status')}: {why}); fix it and "
                              "re-run the bench before exporting it")
    if row.get("complete") is False:
        raise WhisperoptError(f"recipe {recipe} is incomplete in that run ({row.get('utterances')} of "
                              f"{row.get('expected_utterances')} utterances); re-run the bench to finish it first")
    return row


def _build_command(summary: Summary, recipe: str, rebuild: bool = False) -> str:
    """The command that builds ``recipe`` as the bench did (its --option values included)."""
    opts = "".join(f" --option {recipe}:{k}={v}" for k, v in (summary["config"].get("recipe_options") or {})
                   .get(recipe, {}).items())
    return (f"`whisperopt build --model {summary['config'].get('model')} --recipes {recipe}{opts}"
            + (" --rebuild`" if rebuild else "`"))


def _cached_artifact(summary: Summary, results_dir: Path, recipe: Recipe, status: RecipeStatus) -> tuple[Path, dict]:
    """The cache directory and manifest of the artifact the bench measured (where the run recorded it, else where
    this cache keeps it), checked to be that very build."""
    measured = status.get("manifest") or {}
    source = Path(measured.get("source_model") or "")
    candidates = [Path(status["artifact_dir"])] if status.get("artifact_dir") else []
    if source.is_dir() and (source / "config.json").is_file():
        candidates.append(artifact_path(recipe, source, status.get("options") or {}))
    adir = next((c for c in candidates if (c / MANIFEST).is_file()), None)
    if adir is None:
        raise WhisperoptError(f"the {recipe.name} artifact benchmarked in {results_dir} is no longer in the cache "
                              f"({candidates[0] if candidates else 'no path recorded'}); rebuild it with "
                              f"{_build_command(summary, recipe.name)} (same "
                              "WHISPEROPT_CACHE) and export again")
    manifest = read_json(adir / MANIFEST, "artifact manifest", f"rebuild it with "
                         f"{_build_command(summary, recipe.name, rebuild=True)} and re-run the bench")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("integrity"), dict):
        raise WhisperoptError(f"{adir / MANIFEST} has no file table (built by an older whisperopt); rebuild it with "
                              f"{_build_command(summary, recipe.name, rebuild=True)} and re-run the bench")
    same = (manifest["integrity"] == measured["integrity"]) if isinstance(measured.get("integrity"), dict) \
        else manifest.get("built_at") == measured.get("built_at")
    if not same:
        raise WhisperoptError(f"the cached {recipe.name} artifact ({adir}) is not the build benchmarked in "
                              f"{results_dir} (rebuilt since); re-run the bench on it, then export")
    why = damage(adir, manifest["integrity"])
    if why:
        raise WhisperoptError(f"the cached {recipe.name} artifact is damaged ({why}); rebuild it with "
                              f"{_build_command(summary, recipe.name, rebuild=True)} and re-run the bench")
    return adir, manifest


def _source_model(manifest: dict, recipe: str, summary: Summary) -> Path:
    """The checkpoint directory the artifact was built from, as it was (its tokenizer and config are exported)."""
    source = Path(manifest.get("source_model") or "")
    if not (source / "config.json").is_file():
        raise WhisperoptError(f"the checkpoint {recipe} was built from is gone ({source}); resolve it again with "
                              f"`whisperopt build --model {summary['config'].get('model')} --recipes {recipe}`")
    if model_fingerprint(source) != manifest.get("model_fingerprint"):
        raise WhisperoptError(f"the checkpoint {source} changed since {recipe} was built from it (fingerprint "
                              "differs); re-run the bench, then export")
    return source


def _hub_id(spec: str) -> str | None:
    """The hub id of the checkpoint a ``--model`` argument names (a size or an org/name), if any."""
    if spec in SIZES:
        return SIZES[spec].hub_id or None
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).exists():
        return spec
    return None


# --- writing the directory ---

def _plan(summary: Summary, r: Recipe, adir: Path, manifest: dict, weights_dir: Path,
          source: Path) -> list[tuple[Path, str, str | None, str]]:
    """What the export copies, as (source file, exported path, the sha256 its build recorded, what to do if it
    differs): the artifact's files, those it runs from elsewhere (a base artifact, or the checkpoint itself), and
    the checkpoint's tokenizer, processor and config files (its weights too where the recipe loads them)."""
    rebuild = _build_command(summary, r.name, rebuild=True)
    plan: list[tuple[Path, str, str | None, str]] = []
    for rel, entry in manifest["integrity"].items():
        plan.append((_inside(adir, rel, "artifact", links=True), f"{ARTIFACT_DIR}/{rel}", entry["sha256"],
                     f"rebuild it with {rebuild}"))
    if weights_dir != adir:  # files this recipe runs from elsewhere: a base artifact, or the checkpoint itself
        base_manifest = read_json(weights_dir / MANIFEST, "artifact manifest", f"rebuild with {rebuild}") \
            if (weights_dir / MANIFEST).is_file() else None
        if base_manifest is not None:
            why = damage(weights_dir, base_manifest.get("integrity") or {})
            if why:
                raise WhisperoptError(f"the artifact {r.name} runs ({weights_dir}) is damaged ({why}); rebuild it with "
                                      f"`whisperopt build --model {summary['config'].get('model')} --recipes "
                                      f"{base_manifest.get('recipe')} --rebuild` and re-run the bench")
            files = {rel: e["sha256"] for rel, e in (base_manifest.get("integrity") or {}).items()}
        elif weights_dir.resolve() != source.resolve():  # every file of a folder is copied only from the checkpoint
            raise WhisperoptError(f"the artifact {r.name} runs ({weights_dir}) has no manifest and is not the checkpoint "
                                  f"it was built from; rebuild it with {rebuild} and re-run the bench")
        else:
            files = {p.relative_to(weights_dir).as_posix(): None for p in sorted(weights_dir.rglob("*"))
                     if p.is_file() and p.name != CARD}
        known = {dst for _, dst, _, _ in plan}
        plan += [(_inside(weights_dir, rel, "artifact", links=True), f"{ARTIFACT_DIR}/{rel}", sha,
                  f"rebuild it with {rebuild}") for rel, sha in files.items() if f"{ARTIFACT_DIR}/{rel}" not in known]
    for p in sorted(source.iterdir()):
        if p.is_file() and (p.suffix in SIDE_SUFFIXES or (r.loads_source_weights and p.suffix in WEIGHT_SUFFIXES)):
            plan.append((p, p.name, None, "the checkpoint changed while it was read"))
    return plan


def _baseline_row(summary: Summary, results_dir: Path) -> tuple[str | None, SummaryRow | None]:
    """The run's baseline recipe and its row (None where it did not finish)."""
    baseline = summary.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or find_recipe(baseline) is None):
        raise WhisperoptError(f"{results_dir}/summary.json names a baseline ({baseline!r}) that is no recipe; run "
                              f"`whisperopt report {results_dir}` to rewrite it")
    return baseline, next((x for x in summary["recipes"] if x.get("recipe") == baseline and x.get("status") == "ok"),
                          None)


def export_record(summary: Summary, results_dir: Path, r: Recipe, row: SummaryRow, status: RecipeStatus,
                  manifest: dict, source: Path, vocab: Vocabulary, table: dict[str, dict]) -> ExportRecord:
    """whisperopt_export.json: the recipe and its options, the checkpoint it was built from, the benchmark row (and
    the baseline's), the decode settings, environment, versions and build, and ``table``, the files written."""
    env = summary.get("environment") or {}
    spec = str((env.get("model") or {}).get("spec") or summary["config"].get("model"))
    hub_id = _hub_id(spec)
    synthetic = bool(summary.get("synthetic"))
    baseline, base_row = _baseline_row(summary, results_dir)
    return ExportRecord({
        "format": EXPORT_FORMAT,
        "recipe": r.name,
        "engine": r.engine,
        "description": r.description,
        "options": status.get("options") or {},
        "weight_bits": r.weight_bits,
        "artifact": ARTIFACT_DIR,
        "loads_source_weights": r.loads_source_weights,
        "source_model": SourceModel({
            "spec": spec, "source": (env.get("model") or {}).get("source"), "path": str(source),
            "fingerprint": manifest.get("model_fingerprint"), "hub_id": None if synthetic else hub_id,
            "synthetic": synthetic, "license": "mit" if hub_id and hub_id.startswith(MIT_ORGS) and not synthetic
            else None, "multilingual": vocab.multilingual, "languages": list(vocab.languages),
        }),
        "benchmark": ExportBenchmark({
            "results_dir": str(results_dir.resolve()),
            "dataset": {"spec": summary["config"].get("dataset"), "limit": summary["config"].get("limit"),
                        **(env.get("dataset") or {})},
            "row": row,
            "baseline_recipe": baseline,
            "baseline_row": base_row if baseline != r.name else None,
            "recommendation": summary.get("recommendation"),
            "recommended": (summary.get("recommendation") or {}).get("recipe") == r.name,
            "units": summary.get("units"),
            "bootstrap": summary.get("bootstrap"),
            "fidelity_utterances": summary["config"].get("fidelity_utterances"),
        }),
        "decode": {"bench": summary["config"].get("decode"), "engine": row.get("decode_settings")},
        "environment": {k: v for k, v in env.items() if k not in ("model", "dataset")},
        "versions": {"whisperopt": __version__, "built_with": manifest.get("versions") or {}},
        "build": ExportBuild({"built_at": manifest.get("built_at"), "build_seconds": manifest.get("build_seconds"),
                              "validation": manifest.get("validation"),
                              "fields": {k: v for k, v in manifest.items() if k not in BOOKKEEPING}}),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": dict(sorted(table.items())),  # what this export wrote (besides the record and the card)
        "files_sha256": table_digest(dict(sorted(table.items()))),
    })


def _measured(results_dir: Path, r: Recipe) -> RecipeStatus:
    """The recipe's status in the run, which must record the artifact it ran."""
    status = read_status(recipe_paths(results_dir, r.name)["status"])
    if status.get("status") != "ok" or not status.get("manifest"):
        raise WhisperoptError(f"{r.name}.status.json in {results_dir} does not record the artifact it ran; re-run the "
                              "bench, then export")
    return status


def export_results(results_dir: Path, out: Path, recipe: str | None = None, recommended: bool = False,
                   overwrite: bool = False, repo_id: str | None = None,
                   log: Callable[[str], None] | None = None) -> ExportResult:
    """Export ``recipe`` (or the recommended one) of the benchmark in ``results_dir`` into ``out`` (which must be
    empty or absent, unless ``overwrite``). ``repo_id``: the hub repository the card's examples name."""
    from .card import model_card

    log = log or (lambda m: None)
    results_dir, out = Path(results_dir), Path(out)
    if (recipe is None) == (not recommended):
        raise WhisperoptError("give exactly one of --recipe NAME or --recommended")
    summary = read_summary(results_dir)
    row = select_row(summary, results_dir, recipe, recommended)
    r = get_recipe(row["recipe"])
    check_target(out, results_dir, overwrite)
    status = _measured(results_dir, r)
    adir, manifest = _cached_artifact(summary, results_dir, r, status)
    source = _source_model(manifest, r.name, summary)
    weights_dir = Path(manifest.get("weights_dir") or adir)
    plan = _plan(summary, r, adir, manifest, weights_dir, source)
    vocab = Vocabulary.from_model_dir(source)
    evidence = [results_dir / "summary.json", recipe_paths(results_dir, r.name)["rows"]]
    baseline, base_row = _baseline_row(summary, results_dir)
    if base_row is not None and baseline != r.name:
        evidence.append(recipe_paths(results_dir, baseline)["rows"])

    total = sum(src.stat().st_size for src, *_ in plan)
    log(f"exporting {r.name} from {results_dir}: {len(plan)} files, {total / 1e6:.1f} MB -> {out}")
    with atomic_dir(out) as tmp:
        table: dict[str, dict] = {}
        for src, rel, sha, fix in plan:
            table[rel] = _copy(src, _inside(tmp, rel, "export"), sha, fix)
        art_files = {rel[len(ARTIFACT_DIR) + 1:]: e for rel, e in table.items() if rel.startswith(ARTIFACT_DIR + "/")}
        exported_manifest = {k: v for k, v in manifest.items() if k != "weights_dir"}
        exported_manifest.update(integrity=art_files, exported={
            "from": str(adir), **({"weights_from": str(weights_dir)} if weights_dir != adir else {}),
            "results": str(results_dir.resolve())})
        atomic_write_json(tmp / ARTIFACT_DIR / MANIFEST, exported_manifest)
        table[f"{ARTIFACT_DIR}/{MANIFEST}"] = _written(tmp / ARTIFACT_DIR / MANIFEST)
        for f in evidence:
            if f.is_file():
                src = _inside(results_dir, f.relative_to(results_dir), "results", links=True)
                table[f"{EVIDENCE_DIR}/{f.name}"] = _copy(src, tmp / EVIDENCE_DIR / f.name, None, "")
        record = export_record(summary, results_dir, r, row, status, manifest, source, vocab, table)
        write_export(tmp, record)
        atomic_write_text(tmp / CARD, str(model_card(record, out.name, repo_id)))
        tmp.chmod(0o777 & ~_umask())  # a temporary directory is private; the export is an ordinary one
    return ExportResult(out, r.name, record, sum(e["bytes"] for e in record["files"].values()))


def push_to_hub(out: Path, repo_id: str, private: bool = False) -> str:
    """Upload an exported directory to the Hugging Face hub (``create_repo`` + ``upload_folder``); the URL of the
    commit. No network, no token or no access is one line (the local export is already written)."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(out), repo_id=repo_id,
                                 commit_message=f"whisperopt export ({Path(out).name})")
    except Exception as exc:  # noqa: BLE001 - offline, no token, no access, HTTP errors: all one line
        raise WhisperoptError(f"the export is written to {out}, but pushing it to the hub as {repo_id} failed: "
                              f"{described(exc)}") from None
    return str(getattr(info, "commit_url", info))


def check_repo_id(repo_id: str) -> None:
    """A hub repository id (``user/name``), checked before any work."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise WhisperoptError(f"--push-to-hub {repo_id!r} is not a hub repository id (user/name): "
                              f"{first_line(exc)}") from None
    if repo_id.count("/") != 1:
        raise WhisperoptError(f"--push-to-hub {repo_id!r}: give user/name (or org/name)")
