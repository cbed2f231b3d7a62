"""``whisperopt transcribe``: audio/video files into txt/srt/vtt/json/tsv with any recipe, here or over a Ray cluster
(``transcribe.files.FileRun``)."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

from ..constants import MAX_BATCH, MAX_CANDIDATES, MAX_NEW_TOKENS
from ..errors import WhisperoptError
from ..transcribe.packing import DEFAULT_GAP_S
from .common import (
    DEVICES,
    MODEL_HELP,
    RECIPE_HELP,
    THREADS_HELP,
    add_vad_args,
    check_threads,
    error_line,
    recipe_options,
    stderr_line,
    vad_values,
)


def add_parser(sub) -> None:
    t = sub.add_parser("transcribe", help="transcribe audio/video files into txt/srt/vtt/json/tsv with any recipe",
                       description="Long-form transcription (30-s windows, timestamps, seeking like openai-whisper). "
                       "Options named like openai-whisper's CLI; both --beam-size and --beam_size spellings work. "
                       "An input whose output files all exist is skipped, so an interrupted run continues where it "
                       "stopped (--overwrite: transcribe it again).")
    t.add_argument("audio", nargs="*", help="audio or video files (anything PyAV/ffmpeg decodes); - reads stdin")
    t.add_argument("--files-from", default=None, metavar="LIST",
                   help="more inputs: a text file with one path per line, or a .jsonl manifest's 'audio' fields")
    t.add_argument("--model", required=True, help=MODEL_HELP)
    t.add_argument("--recipe", default=None, help=RECIPE_HELP)
    t.add_argument("--device", default="auto", choices=DEVICES)
    t.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    t.add_argument("--option", action="append", default=[], help="recipe option key=value (repeatable)")
    t.add_argument("--language", default="auto", help="language code or name; auto: detect from the first 30 s")
    t.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    t.add_argument("--output-format", "--output_format", "-f", default="all",
                   help="comma-separated: txt, srt, vtt, json, tsv, or all")
    t.add_argument("--output-dir", "--output_dir", "-o", default=".", help="where to write <name>.<format>")
    t.add_argument("--verify", action="store_true", help="check the cached artifact against the sha256 digests its "
                   "build recorded (sizes are always checked); a damaged one is rebuilt")
    t.add_argument("--overwrite", action="store_true",
                   help="transcribe inputs whose output files already exist (default: skip them)")
    _decode_args(t)
    add_vad_args(t, "instead of every 30-s window")
    t.add_argument("--verbose", "-v", action="store_true", help="print each segment as it is decoded")
    t.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="spread the inputs over a Ray cluster (ADDRESS, or auto: the cluster this machine belongs "
                   "to, else a new local one): one transcriber per --threads CPUs (default 1) of each node; needs "
                   "the ray extra")
    t.set_defaults(func=run)


def _decode_args(t: argparse.ArgumentParser) -> None:
    """How each input is decoded (openai-whisper's options, and whisperopt's modes, packing and guards)."""
    t.add_argument("--mode", default="sequential", choices=["sequential", "batched", "plain"],
                   help="sequential: seek on timestamps (openai-whisper); batched: fixed 30-s windows, --batch-size "
                   "per call (throughput); plain: text-only engines, one segment per 30-s chunk")
    t.add_argument("--batch-size", "--batch_size", type=int, default=8,
                   help=f"windows per engine call (batched/plain), 1-{MAX_BATCH}")
    t.add_argument("--beam-size", "--beam_size", type=int, default=5,
                   help=f"beams at temperature 0, 1-{MAX_CANDIDATES} (openai CLI: 5)")
    t.add_argument("--best-of", "--best_of", type=int, default=5,
                   help=f"sampled candidates at temperature > 0, 1-{MAX_CANDIDATES}")
    t.add_argument("--temperature", default="0", help="a start temperature, or a comma-separated fallback list")
    t.add_argument("--temperature-increment-on-fallback", "--temperature_increment_on_fallback", type=float,
                   default=0.2, help="fallback step from --temperature up to 1.0 (0: no fallback)")
    t.add_argument("--compression-ratio-threshold", "--compression_ratio_threshold", type=float, default=2.4)
    t.add_argument("--logprob-threshold", "--logprob_threshold", type=float, default=-1.0)
    t.add_argument("--no-speech-threshold", "--no_speech_threshold", type=float, default=0.6)
    t.add_argument("--condition-on-previous-text", "--condition_on_previous_text",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="prompt each window with the previous text (--no-condition-on-previous-text: off)")
    t.add_argument("--initial-prompt", "--initial_prompt", default=None, help="text to prompt the first window with")
    t.add_argument("--without-timestamps", action="store_true", help="one segment per window, no timestamp tokens")
    t.add_argument("--word-timestamps", "--word_timestamps", action="store_true",
                   help="word start/end times in the JSON output (torch-* recipes: cross-attention alignment)")
    t.add_argument("--hallucination-silence-threshold", "--hallucination_silence_threshold", type=float,
                   default=None, metavar="SECONDS",
                   help="with --word-timestamps, --mode sequential: skip silence longer than this around a segment "
                   "whose words look made up, and drop that segment (openai-whisper's option)")
    t.add_argument("--loop-repeats", type=int, default=None, metavar="N",
                   help="a window saying one n-gram (1-12 words) N times in a row falls back to the next temperature; "
                   "still looping at the last, the repeats after N-1 are cut (default: off)")
    t.add_argument("--pack", action="store_true",
                   help="inputs shorter than 30 s less the gap are joined several to a 30-s window (silence between "
                   "them), decoded with timestamps (like --mode batched windows, --batch-size windows per call) and "
                   "split back by timestamp; each input's files as usual; longer inputs take the --mode path")
    t.add_argument("--pack-gap", type=float, default=DEFAULT_GAP_S, metavar="SECONDS",
                   help=f"with --pack: silence after each packed input (default {DEFAULT_GAP_S:g}, chosen on dev-clean)")
    t.add_argument("--max-new-tokens", type=int, default=224,
                   help=f"decoded tokens per window at most, 1-{MAX_NEW_TOKENS} (the decoder's positions less its "
                   "start tokens; a previous-text prompt leaves fewer, and decoding stops there)")
    t.add_argument("--silence-threshold", type=float, default=1e-3,
                   help="windows whose peak level is below this are silence and not decoded (default -60 dBFS)")


def _temperatures(text: str, increment: float) -> tuple[float, ...]:
    """``0`` with an increment of 0.2 -> (0, 0.2, ..., 1.0) like openai-whisper; ``0,0.4,0.8`` is taken as given."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise WhisperoptError(f"--temperature expects numbers, got {text!r}") from None
    if len(values) == 1 and increment and increment > 0:
        t, values = values[0], []
        while t <= 1.0 + 1e-6:
            values.append(round(t, 4))
            t += increment
        values = values or [float(text)]
    return tuple(values)


def _options(args):
    """The decode settings (``TranscribeOptions``) from the flags, checked."""
    from ..transcribe import TranscribeOptions

    options = TranscribeOptions(
        language=args.language, task=args.task, mode=args.mode, beam_size=args.beam_size, best_of=args.best_of,
        temperature=_temperatures(args.temperature, args.temperature_increment_on_fallback),
        compression_ratio_threshold=args.compression_ratio_threshold, logprob_threshold=args.logprob_threshold,
        no_speech_threshold=args.no_speech_threshold, condition_on_previous_text=args.condition_on_previous_text,
        initial_prompt=args.initial_prompt, without_timestamps=args.without_timestamps,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, silence_threshold=args.silence_threshold,
        word_timestamps=args.word_timestamps, pack=args.pack, pack_gap=args.pack_gap,
        hallucination_silence_threshold=args.hallucination_silence_threshold, loop_repeats=args.loop_repeats,
        **vad_values(args))
    options.check()
    return options


def _progress_bar(verbose: bool):
    """``FileRun.watch`` for a terminal: a transient bar on stderr's terminal; with ``verbose``, each segment."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..transcribe.files import FileProgress
    from ..transcribe.writers import format_timestamp

    class Bar(FileProgress):
        def __init__(self, progress, task):
            self.progress, self.task = progress, task

        def started(self, duration):
            self.progress.update(self.task, total=duration, of=f"{duration:.0f}")

        def advanced(self, seconds):
            self.progress.update(self.task, completed=seconds)

        def segment(self, seg):
            if verbose:
                self.progress.console.print(f"[{format_timestamp(seg.start)} --> {format_timestamp(seg.end)}] "
                                            f"{seg.text.strip()}", markup=False, highlight=False)

    @contextmanager
    def watch(stem: str):
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed:.0f}/{task.fields[of]} s audio"), TimeElapsedColumn(),
                      transient=True, disable=not sys.stderr.isatty()) as progress:
            yield Bar(progress, progress.add_task(stem[:40], total=None, of="?"))

    return watch


def run(args) -> int:
    import warnings

    from ..metrics.hardware import resolve_device
    from ..recipes import model_recipe
    from ..transcribe.files import FileRun
    from ..transcribe.inputs import check_output_dir, read_file_list
    from ..transcribe.writers import parse_formats

    warnings.filterwarnings("ignore")
    formats = parse_formats(args.output_format)
    check_threads(args.threads)
    out_dir = Path(args.output_dir)
    check_output_dir(out_dir)
    options = _options(args)
    if args.pack and args.ray is not None:
        raise WhisperoptError("--pack joins short inputs into windows on this machine; it cannot run with --ray")
    if args.files_from:
        args.audio = list(args.audio) + read_file_list(Path(args.files_from))
    if not args.audio:
        raise WhisperoptError("no input: give audio files, - for standard input, or --files-from LIST")
    files = FileRun(args.audio, out_dir, formats, say=print, error=error_line, watch=_progress_bar(args.verbose))
    todo = files.plan(args.overwrite)
    try:
        if todo:
            recipe = model_recipe(args.model, args.recipe)
            files.transcribe(todo, options, args.model, recipe, resolve_device(args.device), args.threads,
                             recipe_options(args.option, [recipe]).get(recipe.name), args.verify, ray=args.ray,
                             log=stderr_line)
    except KeyboardInterrupt:  # outputs are written whole, so a re-run skips exactly the inputs that are done
        stderr_line(f"whisperopt: interrupted: {files.done} of {len(args.audio)} input(s) done; re-run the same "
                    "command to continue with the rest")
        return 130
    return files.end()
