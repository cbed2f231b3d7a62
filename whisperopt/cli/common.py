"""What several commands share: argument groups (--device, VAD, the recommendation's criteria), --option parsing, the
console, the report shown at the end of bench and report."""

from __future__ import annotations

import argparse
import sys

from ..errors import WhisperoptError
from ..recipes import BASELINE

MODEL_HELP = "hub id, size name, local HF dir, openai .pt, or synthetic:<size>"
RECIPE_HELP = f"one recipe (see `whisperopt recipes`; default {BASELINE}, or an exported --model's own recipe)"
DEVICES = ["auto", "cpu", "cuda"]
THREADS_HELP = "engine threads, at least 1 (default: all cores)"


def console():
    from rich.console import Console

    # a pipe or CI log gets the full table instead of an 80-column squeeze
    return Console(stderr=False, width=None if sys.stdout.isatty() else 220)


def error_line(message: str) -> None:
    """One ``whisperopt: error:`` line on stderr (an input or recipe that failed while the others go on)."""
    print(f"whisperopt: error: {message}", file=sys.stderr)


def stderr_line(message: str) -> None:
    print(message, file=sys.stderr)


def check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise WhisperoptError(f"--threads must be at least 1, got {threads} (leave it out to use all cores)")


def _parse_options(items: list[str]) -> dict[str, dict]:
    """``--option RECIPE:key=value`` or ``--option key=value`` (applies to every recipe listing that key)."""
    out: dict[str, dict] = {}
    for item in items or []:
        target, _, assignment = item.rpartition(":") if ":" in item.split("=", 1)[0] else ("*", "", item)
        key, eq, value = assignment.partition("=")
        if not eq or not key:
            raise WhisperoptError(f"--option expects [RECIPE:]key=value, got {item!r}")
        out.setdefault(target, {})[key] = value
    return out


def recipe_options(items: list[str], recipes: list) -> dict[str, dict]:
    """Per-recipe ``--option`` values; a generic ``key=value`` goes to each of ``recipes`` (Recipe objects) with it."""
    parsed = _parse_options(items)
    result: dict[str, dict] = {}
    generic = parsed.pop("*", {})
    for recipe in recipes:
        opts = {k: v for k, v in generic.items() if k in recipe.defaults}
        if opts:
            result[recipe.name] = opts
    used = {k for opts in result.values() for k in opts}
    if set(generic) - used:
        raise WhisperoptError(f"no recipe in --recipes takes option(s) {', '.join(sorted(set(generic) - used))}")
    for name, opts in parsed.items():
        result.setdefault(name, {}).update(opts)
    return result


def add_vad_args(p: argparse.ArgumentParser, what: str) -> None:
    """--vad-filter and its knobs (faster-whisper's VadOptions, transcribe/vad.py), for transcribe and serve."""
    from ..transcribe.vad import MAX_CHUNK_S, VAD_DEFAULTS

    d = VAD_DEFAULTS

    p.add_argument("--vad-filter", action="store_true",
                   help=f"decode only the speech Silero VAD finds (faster-whisper's, the ct2 extra) {what}: regions "
                   "joined into chunks of at most --vad-max-chunk-s, one window each; times mapped back")
    p.add_argument("--vad-threshold", type=float, default=d["vad_threshold"],
                   help=f"speech probability above which a 32-ms frame is speech (default {d['vad_threshold']:g})")
    p.add_argument("--vad-min-silence-ms", type=int, default=d["vad_min_silence_ms"],
                   help=f"a pause this long ends a speech region (default {d['vad_min_silence_ms']})")
    p.add_argument("--vad-speech-pad-ms", type=int, default=d["vad_speech_pad_ms"],
                   help=f"audio kept on each side of a region (default {d['vad_speech_pad_ms']})")
    p.add_argument("--vad-min-speech-ms", type=int, default=d["vad_min_speech_ms"],
                   help=f"regions shorter than this are dropped (default {d['vad_min_speech_ms']})")
    p.add_argument("--vad-max-chunk-s", type=float, default=d["vad_max_chunk_s"],
                   help=f"speech per chunk, 1-{MAX_CHUNK_S:g}; a longer region is split (default "
                   f"{d['vad_max_chunk_s']:g})")


def vad_values(args) -> dict:
    from ..transcribe.vad import VAD_FIELDS

    return {name: getattr(args, name) for name in VAD_FIELDS}


def add_recommend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wer-budget", type=float, default=1.0,
                   help=f"WER percentage points: recommend only recipes whose 95%% CI of WER minus {BASELINE}'s "
                   "WER has its upper bound within this budget (default 1.0)")
    p.add_argument("--min-agreement", type=float, default=0.95,
                   help="without a meaningful WER (synthetic weights): minimum teacher-forced top-1 agreement "
                   "with fp32, a fraction 0-1 (default 0.95)")
    p.add_argument("--rank-by", default="eval_s", metavar="eval_s|peak_ram|size",
                   help="among eligible recipes recommend the fastest (eval_s), lowest peak RAM, or smallest")
    p.add_argument("--columns", default=None,
                   help="terminal table columns: comma-separated keys, or all (summary.md/.csv always have all)")
    p.add_argument("--workload", default=None, choices=["short", "long"],
                   help="whose recommendation is the headline where the results hold both workloads: short-form "
                   "(utterances) or long-form (librispeech-long: fastest RTFx recipe and mode within --wer-budget); "
                   "default short where it was run")


def check_report_args(args) -> None:
    """A typo in --columns or a bad criterion fails before any work."""
    from ..report import check_criteria, select_columns

    check_criteria(args.wer_budget, args.min_agreement, args.rank_by)
    select_columns(args.columns)


def show(summary: dict, columns: str | None, out=None) -> None:
    """Per workload (the headline first) the terminal table(s), then the recommendation saved in the summary
    (summary.json / summary.md) as plain text."""
    from ..report import terminal_parts

    out = out or console()
    for part in terminal_parts(summary, columns):
        if isinstance(part, str):
            print(part)
        else:
            out.print(part)


def failures(summary: dict) -> int:
    """1 (after one line per recipe) when a recipe failed or its results are damaged, so scripts can tell; else 0."""
    from ..report import failed_recipes

    failed = failed_recipes(summary)
    for r in failed:
        error_line(f"{r['recipe']} failed: {r.get('reason') or 'see its log'}")
    return 1 if failed else 0
