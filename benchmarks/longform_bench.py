"""Long-form benchmark, before it is wired into `whisperopt bench`: recipes x long-form modes x long-form datasets.

    python benchmarks/longform_bench.py --model tiny.en --recipes torch-fp32:sequential,ct2-int8:batched+vad,\\
        ct2-int8-fw-batched:native --dataset librispeech-long:train-clean-5,librispeech-long:train-clean-5:hard \\
        --limit 2 --threads 2 --out results-long

Each (recipe, mode, dataset) runs in its own process (``--child``, so its peak memory is its own) through
``whisperopt.bench.longform.evaluate_longform``: one progress line per file; the file's segments are appended to
``OUT/<recipe>.<mode>.<dataset>.transcripts.jsonl`` as it finishes (a re-run with the same --out resumes), the run's
own figures to ``....run.json``. The parent re-scores every run from those files, pairs each with the baseline
recipe in sequential mode on the same files (paired bootstrap over files), and writes ``OUT/summary.json`` and
``OUT/summary.md``.

``--recipes`` takes ``name`` (every mode of ``--modes``) or ``name:mode+mode``. ``native`` is the engine's own
whole-file pipeline (recipes whose runtime has one, e.g. the faster-whisper peer row); a recipe that has one runs
only ``native``, the others every other mode asked for. train-clean-5 is not a test split (fine for Whisper, which
was not trained on LibriSpeech; say so where results are shown).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from whisperopt.bench.longform import MODES, LongformRun, evaluate_longform
from whisperopt.bench.results import read_rows
from whisperopt.data import load_dataset
from whisperopt.errors import WhisperoptError
from whisperopt.files import atomic_write_json, atomic_write_text, confined, read_json
from whisperopt.metrics.bootstrap import LEVEL, RESAMPLES, SEED
from whisperopt.metrics.hardware import cpu_info
from whisperopt.recipes import baseline_recipe, get_recipe


def _paths(out: Path, recipe: str, mode: str, dataset: str) -> tuple[Path, Path]:
    stem = f"{recipe}.{mode}.{dataset}"
    return confined(out, f"{stem}.transcripts.jsonl"), confined(out, f"{stem}.run.json")


def child(job: dict) -> int:
    """One (recipe, mode, dataset): build (cached), load, evaluate; write the run record (or why it was skipped)."""
    from whisperopt.models import resolve_model
    from whisperopt.recipes.artifacts import build_artifact

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
        if native != (job["mode"] == "native"):
            why = "it runs its own long-form pipeline (mode native)" if native else "no long-form pipeline of its own"
            atomic_write_json(record_path, {"skipped": f"{recipe.name} {job['mode']}: {why}"})
            return 0
        options = {"batch_size": job["batch_size"]} if job["mode"] != "native" else None
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
    """Whether an earlier run already decoded every file of this job (or skipped it): nothing to start again."""
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
        bad = [m for m in wanted if m not in MODES]
        if bad:
            raise WhisperoptError(f"unknown long-form mode {bad[0]!r}; choose from {', '.join(MODES)}")
        out.append((get_recipe(name).name, wanted))
    return out


def _fmt(x, digits=2, unit=""):
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def _ci(pair):
    return "" if not pair else f" [{pair[0]:.2f}, {pair[1]:.2f}]"


def markdown(summary: dict) -> str:
    lines = [f"# Long-form benchmark: {summary['model']}, {summary['threads']} threads, {summary['cpu']}", ""]
    for name, block in summary["datasets"].items():
        lines += [f"## {name} ({block['files']} files, {block['audio_min']:.1f} min, {block['stretch_min']:.1f} min "
                  f"of inserted non-speech); deltas against {block['reference'] or 'no reference'}", "",
                  "| recipe | mode | RTFx | speed-up | WER % [95 % CI] | ΔWER points [95 % CI] | inserted words | "
                  "words in stretches (silence/noise/music) | Δ stretch words | loops | start error median / p90 s | "
                  "run RAM MiB |",
                  "|---|---|---:|---:|---|---|---:|---|---:|---:|---|---:|"]
        for r in block["rows"]:
            if r["status"] != "ok":
                lines.append(f"| {r['recipe']} | {r['mode']} | {r['status']}: {r.get('reason', '')} ||||||||||")
                continue
            kinds = "/".join(str(r["stretch_words_by_kind"].get(k, 0)) for k in ("silence", "noise", "music"))
            change = _fmt(None if r["stretch_words_change"] is None else 100 * r["stretch_words_change"], 0, " %")
            mode = f"{r['mode']} (own settings)" if r.get("own_settings") else r["mode"]
            lines.append(f"| {r['recipe']} | {mode} | {_fmt(r['rtfx'], 1)} | {_fmt(r['speedup'], 2, '×')} | "
                         f"{_fmt(r['wer'])}{_ci(r['wer_ci'])} | {_fmt(r['wer_delta'])}{_ci(r['wer_delta_ci'])} | "
                         f"{r['insertions']} | {r['stretch_words']} ({kinds}) | {change} | {r['loops']} | "
                         f"{_fmt(r['start_error_median_s'])} / {_fmt(r['start_error_p90_s'])} | "
                         f"{_fmt(r['run_ram_mb'], 0)} |")
        lines.append("")
    lines.append("RTFx: audio seconds per wall second, per file from the call to its last segment (audio decoding "
                 "included). Words in stretches: hypothesis words placed (word times, else spread over the segment, "
                 "or over the speech a VAD pipeline kept in it) inside an inserted non-speech stretch shrunk by "
                 "0.5 s: with segment timing, real words of a segment whose timestamps span a stretch count too "
                 "(compare with the inserted words, an upper bound on made-up words). train-clean-5 is not a test split. The machine may be shared: times are indicative.")
    return "\n".join(lines) + "\n"


def _collect(out: Path, runs, datasets, limit, reference: str) -> dict:
    blocks = {}
    for spec in datasets:
        ds = load_dataset(spec).limit(limit)
        rows, done = [], {}
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--recipes", default="torch-fp32:sequential,ct2-int8:batched+vad,ct2-int8-fw-batched:native")
    ap.add_argument("--modes", default="sequential,batched,vad", help="modes of a recipe given without :modes")
    ap.add_argument("--dataset", default="librispeech-long:train-clean-5,librispeech-long:train-clean-5:hard")
    ap.add_argument("--limit", type=int, default=None, help="files per dataset")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8, help="windows (chunks) per engine call, batched modes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("results-long"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        if args.child:
            return child(json.loads(args.child))
        runs = _runs(args.recipes, args.modes.split(","))
        datasets = [d for d in args.dataset.split(",") if d]
        args.out.mkdir(parents=True, exist_ok=True)
        for spec in datasets:
            for recipe, modes in runs:
                for mode in modes:
                    if _complete(args.out, recipe, mode, spec, args.limit):
                        continue
                    job = {"model": args.model, "recipe": recipe, "mode": mode, "dataset": spec, "limit": args.limit,
                           "threads": args.threads, "device": args.device, "batch_size": args.batch_size,
                           "out": str(args.out)}
                    t = time.perf_counter()
                    code = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)]).returncode
                    print(f"{recipe} {mode} {spec}: exit {code} after {time.perf_counter() - t:.0f} s", flush=True)
        reference = baseline_recipe().name
        summary = {"workload": "long", "model": args.model, "threads": args.threads, "device": args.device,
                   "cpu": cpu_info().get("model"), "batch_size": args.batch_size,
                   "units": {"wer": "percent", "wer_delta": "percentage points", "rtfx": "audio s per wall s",
                             "*_s": "seconds", "*_mb": "MiB", "stretch_words_change": "fraction of the reference's"},
                   "bootstrap": {"resamples": RESAMPLES, "level": LEVEL, "seed": SEED, "unit": "file",
                                 "interval": "percentile"},
                   "datasets": _collect(args.out, runs, datasets, args.limit, reference)}
        atomic_write_json(args.out / "summary.json", summary)
        atomic_write_text(args.out / "summary.md", markdown(summary))
        print(markdown(summary))
    except WhisperoptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
