"""``whisperopt bench``: recipes side by side on a short-form dataset (``bench.run_bench``) and/or the long-form bench
(``bench.longform_runner``), then the report (``report``)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..bench.config import DEFAULT_DATASET
from ..bench.longform_runner import DEFAULT_MODES
from ..errors import WhisperoptError
from ..recipes import BASELINE, DEFAULT_BENCH_RECIPES
from ..transcribe.packing import DEFAULT_GAP_S
from .common import (
    DEVICES,
    MODEL_HELP,
    add_recommend_args,
    check_report_args,
    console,
    failures,
    recipe_options,
    show,
)


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="benchmark recipes side by side on a dataset")
    b.add_argument("--model", required=True, help=MODEL_HELP)
    b.add_argument("--recipes", default=None, help=f"comma-separated recipes (default {DEFAULT_BENCH_RECIPES}; an "
                   "exported --model: its own recipe)")
    b.add_argument("--dataset", default=DEFAULT_DATASET, help="librispeech:<split>, a LibriSpeech dir or a .jsonl; "
                   "librispeech-long:<split>[:hard] (comma-separated) runs the long-form bench, beside one "
                   "short-form dataset runs both into --out (the report shows them side by side)")
    b.add_argument("--limit", type=int, default=None, help="first N utterances only (long-form: files per dataset)")
    b.add_argument("--long-modes", default=DEFAULT_MODES, metavar="M1,M2",
                   help="long-form modes of a recipe given without :modes (sequential, batched, vad, vad-plain, "
                   "plain, native; a variant MODE@FIELD=VALUE fixes transcription options, its own row, e.g. "
                   "sequential@loop_repeats=4; --recipes also takes NAME:MODE+MODE)")
    b.add_argument("--out", default=None, help="results directory (default whisperopt-results/<model>__<dataset>)")
    b.add_argument("--threads", type=int, default=None, help="threads per recipe, at least 1 (default: all cores)")
    b.add_argument("--device", default="auto", choices=DEVICES)
    b.add_argument("--beam-size", type=int, default=1)
    b.add_argument("--language", default="en", help="language code; all recipes decode with it")
    b.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    b.add_argument("--max-new-tokens", type=int, default=None)
    b.add_argument("--batch-size", type=int, default=None,
                   help="utterances per engine call (default 1; long-form: windows per call of batched modes, 8)")
    b.add_argument("--throughput-batches", default=None, metavar="B1,B2",
                   help="throughput mode: after the measured pass each recipe decodes the same utterances again at "
                   "these batch sizes; summary.md gets RTFx per batch, the best batch and its gain over batch 1")
    b.add_argument("--pack", action="store_true",
                   help="also decode the same utterances packed several to a 30-s window (silence between them, "
                   "timestamps, split back by timestamp) at --batch-size windows per call; summary.md's Throughput "
                   "table gets its RTFx, windows and paired ΔWER against the unpacked measured pass (engines "
                   "without timestamp tokens: skipped, with the reason)")
    b.add_argument("--pack-gap", type=float, default=DEFAULT_GAP_S, metavar="SECONDS",
                   help=f"silence after each packed clip (default {DEFAULT_GAP_S:g}, chosen on dev-clean)")
    b.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="spread the work over a Ray cluster (ADDRESS, or auto: the cluster this machine belongs to, "
                   "else a new local one): tasks of recipe x shard, each holding --threads CPUs of one node; needs "
                   "the ray extra")
    b.add_argument("--shard-size", type=int, default=None, help="utterances per Ray task (default 25)")
    b.add_argument("--warmup", type=int, default=1, help="untimed warm-up transcriptions per recipe")
    b.add_argument("--fidelity-utterances", type=int, default=8,
                   help=f"utterances for fidelity vs {BASELINE} (0: off)")
    b.add_argument("--option", action="append", default=[], help="recipe option [RECIPE:]key=value (repeatable)")
    b.add_argument("--markdown", action="store_true", help="also print the Markdown table")
    b.add_argument("--verify", action="store_true", help="check cached artifacts against the sha256 digests their "
                   "build recorded (sizes are always checked); a damaged one is rebuilt")
    add_recommend_args(b)
    b.set_defaults(func=run)


def _batch_list(text: str | None) -> list[int]:
    """``--throughput-batches 4,8`` as [4, 8]; anything else is a one-line error."""
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise WhisperoptError(f"--throughput-batches expects comma-separated batch sizes, e.g. 4,8; got {text!r}") \
            from None


def _split_workloads(args, out: Path) -> tuple[str | None, str | None]:
    """``--dataset`` as (the short-form dataset, the long-form ones), either None; ``--workload`` must name one this
    bench runs or ``out`` already holds."""
    from ..bench.longform_runner import PREFIX, RESULTS_FILE, is_longform, plan

    if not is_longform(args.dataset):
        short, long = args.dataset, None
    else:
        specs = [d.strip() for d in args.dataset.split(",") if d.strip()]
        shorts = [d for d in specs if not d.startswith(PREFIX)]
        if len(shorts) > 1:
            raise WhisperoptError(f"--dataset: one short-form dataset beside the long-form ones, got {', '.join(shorts)}")
        short, long = (shorts[0] if shorts else None), ",".join(d for d in specs if d.startswith(PREFIX))
    for flag, value in (("--threads", args.threads), ("--batch-size", args.batch_size), ("--limit", args.limit)):
        if long and value is not None and value < 1:
            raise WhisperoptError(f"{flag} must be at least 1")
    if long:
        plan(args.recipes, args.long_modes, long)  # before a short-form bench runs
    held = {"short": short or (out / "run.json").exists(), "long": long or (out / RESULTS_FILE).exists()}
    if args.workload and not held[args.workload]:
        raise WhisperoptError(f"--workload {args.workload}: this bench runs no {args.workload}-form dataset and "
                              f"{out} holds none")
    return short, long


def _config(args, dataset: str, long: str | None, out: Path):
    """The short-form bench's settings (``BenchConfig``) from the flags."""
    from ..bench import BenchConfig
    from ..bench.config import bench_recipes
    from ..metrics.hardware import resolve_device, threads_or_default
    from ..recipes import DecodeOptions

    recipes = bench_recipes(args.model, args.recipes, modes_given=long is not None)
    return BenchConfig(
        model=args.model,
        recipes=[r.name for r in recipes],
        dataset=dataset,
        limit=args.limit,
        decode=DecodeOptions(beam_size=args.beam_size, language=args.language, task=args.task,
                             max_new_tokens=args.max_new_tokens,
                             batch_size=1 if args.batch_size is None else args.batch_size),
        threads=threads_or_default(args.threads),  # 0 is rejected, not "all"
        device=resolve_device(args.device),
        warmup=args.warmup,
        fidelity_utterances=args.fidelity_utterances,
        recipe_options=recipe_options(args.option, recipes),
        out_dir=out,
        verify=args.verify,
        throughput_batches=_batch_list(args.throughput_batches),
        pack=args.pack,
        pack_gap=args.pack_gap,
        ray=args.ray,
        shard_size=args.shard_size,
    )


def _run_short(cfg, shown) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..bench import run_bench

    with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=shown, transient=False, disable=not sys.stdout.isatty()) as progress:
        run_bench(cfg, progress=progress, log=lambda m: shown.print(m, markup=False, highlight=False))


def run(args) -> int:
    from ..bench.longform_runner import run_longform_bench
    from ..metrics.hardware import resolve_device, threads_or_default
    from ..report import summarise_results, write_all

    check_report_args(args)  # a typo in --columns or --rank-by fails now, not after an hour of benchmarking
    slug = "__".join("".join(c if c.isalnum() or c in "-._" else "_" for c in x) for x in (args.model, args.dataset))
    out = Path(args.out) if args.out else Path("whisperopt-results") / slug
    dataset, long = _split_workloads(args, out)
    shown = console()
    if dataset is not None:
        _run_short(_config(args, dataset, long, out), shown)
    if long is not None:
        run_longform_bench(args.model, args.recipes, args.long_modes, long, args.limit,
                           threads_or_default(args.threads), resolve_device(args.device),
                           8 if args.batch_size is None else args.batch_size, out)
    summary = summarise_results(out, args.wer_budget, args.min_agreement, args.rank_by, args.workload)
    paths = write_all(summary, out)
    show(summary, args.columns, shown)
    shown.print(f"results: {paths['md']} (also .csv, .json" + (", plots .png" if dataset is not None else "")
                + f"); open {paths['html']} in a browser", markup=False, highlight=False)
    if args.markdown:
        print(paths["md"].read_text())
    return failures(summary)
