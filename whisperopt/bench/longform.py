"""Long-form evaluation: one recipe artifact, one long-form mode, every file of a long-form dataset.

A long-form dataset (``librispeech-long:<split>[:hard]``, ``data/longform.py``) holds whole files, each with its
``LongformReference`` (utterance spans, inserted non-speech stretches). ``evaluate_longform`` decodes each file in
one of ``MODES``:

* ``sequential`` - openai-whisper's loop (``Transcriber`` mode sequential: seeking on timestamps, conditioning on
  the previous text, temperature fallback, no-speech skipping), the reference row for paired deltas;
* ``batched`` - consecutive fixed 30-s windows, ``batch_size`` per engine call, no conditioning;
* ``vad`` - Silero VAD's speech merged into <= 30-s chunks, decoded batched (``TranscribeOptions.vad_filter``,
  ``transcribe/vad.py``), non-speech never decoded;
* ``vad-plain`` - the same speech chunks through the recipe's text-only ``transcribe`` (no timestamp tokens: one
  segment per chunk, a chunk ending at a pause over 1 s), as faster-whisper's ``BatchedInferencePipeline`` decodes;
* ``plain`` - 30-s chunks through the recipe's text-only ``transcribe`` (engines without timestamps);
* ``native`` - the engine's own whole-file pipeline as its users run it (``Runtime.transcribe_file``, where a
  recipe's runtime declares ``native_long_form``): the labelled peer rows.

Each file is decoded from its path (read as a stream by every mode but ``native``, whose engine reads it as it
does for its users), timed wall-clock from the call to the last segment (RTFx = audio seconds / wall seconds), with
the process's RSS sampled while it runs; its segments are kept (``FileResult.segments``, and one fsync'ed JSON line
per file in ``transcripts_path`` when given, so a run can be resumed and re-scored) and scored with
``metrics.longform.score_file``. Memory holds one file's decode at a time. ``LongformRun.summary`` pools the files
(corpus WER/CER with bootstrap intervals over files, words in stretches, loops, segment-start error);
``LongformRun.to_row(reference)`` is its summary row (percent and seconds, as the short-form summary), with paired
deltas over files against ``reference`` (``paired_fields``), normally the baseline recipe in ``sequential`` mode.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ..constants import N_SAMPLES, SAMPLE_RATE
from ..errors import WhisperoptError
from ..metrics.bootstrap import paired_delta_ci
from ..metrics.longform import FileScore, LongformReference, LongformSummary, score_file, summarise
from ..metrics.resources import CpuMeter, RssSampler, peak_rss_mb
from ..models.synthetic import is_synthetic
from .records import LongRow, LongRunRecord
from .results import append_row, read_rows, repair_rows

MODES = ("sequential", "batched", "vad", "vad-plain", "plain", "native")
# the Transcriber's settings each mode fixes; everything else is the caller's TranscribeOptions (default: openai-
# whisper's transcribe() defaults, greedy with temperature fallback, batch_size 8)
MODE_FIELDS = {"sequential": {"mode": "sequential"}, "batched": {"mode": "batched"},
               "vad": {"mode": "batched", "vad_filter": True}, "vad-plain": {"mode": "plain", "vad_filter": True},
               "plain": {"mode": "plain"}}
_SEGMENT_KEYS = ("avg_logprob", "no_speech_prob", "temperature", "compression_ratio")


# a named mode variant, MODE@field=value[@field=value]: the mode with TranscribeOptions fields fixed, its own row (as
# a recipe's R@key=value), e.g. sequential@loop_repeats=4 or sequential@hallucination_silence_threshold=2 beside
# sequential, to measure what a guard changes on the same files
_VARIANT_VALUE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _field_value(name: str, kind: str, text: str):
    """``text`` as the TranscribeOptions field ``name`` of annotated type ``kind`` takes it (one-line error)."""
    if text.lower() == "none" and "None" in kind:
        return None
    try:
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("str"):
            return text
    except ValueError:
        pass
    raise WhisperoptError(f"long-form mode option {name}={text}: expected {kind}")


def parse_mode(name: str) -> tuple[str, dict]:
    """(base mode, fixed TranscribeOptions fields) of a long-form mode or named variant ``MODE@field=value[@...]``;
    a variant's fields may not be those its mode fixes, and ``hallucination_silence_threshold`` turns word timestamps
    on (it needs them, as in openai-whisper). Anything else is a one-line error."""
    from ..transcribe import TranscribeOptions

    base, *items = name.split("@")
    if base not in MODES:
        raise WhisperoptError(f"unknown long-form mode {base!r}; choose from {', '.join(MODES)}, or MODE@FIELD=VALUE")
    if items and base == "native":
        raise WhisperoptError(f"mode {name!r}: native runs the engine's own settings, nothing can be fixed")
    kinds = {f.name: str(f.type) for f in fields(TranscribeOptions)}
    fixed: dict = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not _VARIANT_VALUE.match(text) or key in fixed:
            raise WhisperoptError(f"mode {name!r}: expected {base}@FIELD=VALUE[@FIELD=VALUE] (each field once)")
        if key not in kinds or key in MODE_FIELDS[base]:
            why = f"fixed by mode {base}" if key in MODE_FIELDS[base] else "not a transcription option"
            raise WhisperoptError(f"mode {name!r}: {key!r} is {why}")
        fixed[key] = _field_value(key, kinds[key], text)
    if fixed.get("hallucination_silence_threshold") is not None:
        fixed.setdefault("word_timestamps", True)
    return base, fixed


def mode_options(mode: str, options=None):
    """The ``TranscribeOptions`` that run ``mode`` (None for ``native``, which runs the engine's own settings), a
    named variant's fields included and checked; ``options``: a ``TranscribeOptions``, a dict of its fields, or None
    (its defaults)."""
    from ..transcribe import TranscribeOptions

    base, fixed = parse_mode(mode)
    known = {f.name for f in fields(TranscribeOptions)}
    if isinstance(options, Mapping):
        unknown = sorted(set(options) - known)
        if unknown:
            raise WhisperoptError(f"unknown transcription option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        options = TranscribeOptions(**options)
    options = options or TranscribeOptions()
    if base == "native":
        return None
    opts = replace(options, **MODE_FIELDS[base], **fixed)
    if fixed:
        try:
            opts.check()
        except WhisperoptError as exc:
            raise WhisperoptError(f"mode {mode!r}: {exc}") from None
    return opts


def _segment_dict(s) -> dict:
    """A segment as kept: times, text, word timings where there are some, the decoder's scores where there are."""
    get = s.get if isinstance(s, Mapping) else (lambda k, d=None: getattr(s, k, d))
    out = {"start": round(float(get("start")), 3), "end": round(float(get("end")), 3), "text": get("text") or ""}
    if get("words"):
        out["words"] = [dict(w) if isinstance(w, Mapping) else {"start": w.start, "end": w.end, "word": w.word}
                        for w in get("words")]
    out.update({k: get(k) for k in _SEGMENT_KEYS if get(k) is not None})
    return out


@dataclass
class FileResult:
    """One long-form file decoded: its segments (as kept), time and memory, and its score against ``reference``."""

    name: str
    reference: LongformReference = field(repr=False)
    segments: list[dict]
    audio_s: float
    wall_s: float
    cpu_s: float = 0.0
    run_ram_mb: float | None = None  # peak RSS of the process while this file was decoded
    info: dict = field(default_factory=dict)  # what the decode reported besides (VAD speech, a pipeline's figures)
    score: FileScore = field(init=False, repr=False)

    def __post_init__(self):
        self.score = score_file(self.reference, scored_segments(self.segments, self.info.get("speech")))

    @property
    def stretch_timing(self) -> str:
        """How the words counted in stretches were placed in time (``metrics.longform.StretchWords.timing``, or
        "speech": spread over the speech the decode kept inside each segment)."""
        timing = self.score.stretch_words.timing
        return "speech" if self.info.get("speech") and timing != "mixed" and \
            not any(s.get("words") for s in self.segments) else timing

    @property
    def rtfx(self) -> float | None:
        return self.audio_s / self.wall_s if self.wall_s > 0 else None

    def transcript_line(self) -> dict:
        """The line ``transcripts_path`` keeps for this file (``from_line`` reads it back)."""
        return {"file": self.name, "audio_s": self.audio_s, "wall_s": self.wall_s, "cpu_s": self.cpu_s,
                "run_ram_mb": self.run_ram_mb, "info": self.info, "segments": self.segments}

    @classmethod
    def from_line(cls, line: dict, reference: LongformReference) -> FileResult:
        return cls(line["file"], reference, list(line["segments"]), float(line["audio_s"]), float(line["wall_s"]),
                   float(line.get("cpu_s") or 0.0), line.get("run_ram_mb"), dict(line.get("info") or {}))

    def to_row(self) -> dict:
        """Per-file figures (WER in percent, as the summary rows)."""
        s = self.score
        return {"file": self.name, "audio_s": self.audio_s, "wall_s": self.wall_s, "rtfx": self.rtfx,
                "run_ram_mb": self.run_ram_mb, "segments": len(self.segments),
                "wer": None if s.wer is None else 100 * s.wer, "words": s.words.to_dict(), "chars": s.chars.to_dict(),
                "stretch_words": s.stretch_words.total, "stretch_words_by_kind": s.stretch_words.by_kind,
                "stretch_timing": self.stretch_timing, "loops": len(s.loops),
                "start_error_median_s": s.starts.median, "start_error_p90_s": s.starts.p90, "info": self.info}


def scored_segments(segments: list[dict], speech) -> list[dict]:
    """The segments as scored: as kept, except where the decode reported the speech it kept (``info["speech"]``,
    [start, end] regions on the input's time line, as a VAD pipeline does) and a segment has no word times: its
    words are spread evenly over the speech inside its span, not over the whole span (a VAD chunk's one segment
    spans the non-speech left out between its regions, where none of its words can come from)."""
    if not speech:
        return segments
    regions = np.asarray(speech, dtype=np.float64).reshape(-1, 2)
    out = []
    for seg in segments:
        words = str(seg.get("text") or "").split()
        lo = np.clip(regions[:, 0], seg["start"], seg["end"])
        hi = np.clip(regions[:, 1], seg["start"], seg["end"])
        lo, hi = lo[hi > lo], hi[hi > lo]
        if seg.get("words") is not None or not words or lo.size == 0:
            out.append(seg)
            continue
        done = np.concatenate([[0.0], np.cumsum(hi - lo)])  # speech seconds before each region
        at = (np.arange(len(words)) + 0.5) * done[-1] / len(words)
        k = np.minimum(np.searchsorted(done, at, side="right") - 1, lo.size - 1)
        times = lo[k] + at - done[k]
        out.append({**seg, "words": [{"start": float(t), "end": float(t), "word": w} for t, w in zip(times, words)]})
    return out


def _percent(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _percent_pair(pair) -> list[float] | None:
    return None if pair is None else [100 * pair[0], 100 * pair[1]]


@dataclass
class LongformRun:
    """One recipe in one long-form mode over a long-form dataset: every file's result and the run's own figures."""

    recipe: str
    mode: str
    dataset: str
    files: list[FileResult]
    settings: dict  # the TranscribeOptions that ran (or, for native, what the engine says it ran)
    threads: int
    device: str = "cpu"
    load_s: float | None = None
    peak_ram_mb: float | None = None  # the process's high-water mark (load included)
    resumed: int = 0  # files whose result came from an earlier run's transcripts
    own_settings: str | None = None  # native: the engine decoded with its own settings, not the bench's (why)

    @property
    def audio_s(self) -> float:
        return sum(f.audio_s for f in self.files)

    @property
    def wall_s(self) -> float:
        return sum(f.wall_s for f in self.files)

    @property
    def rtfx(self) -> float | None:
        return self.audio_s / self.wall_s if self.wall_s > 0 else None

    @property
    def summary(self) -> LongformSummary:
        return summarise([f.score for f in self.files])

    def record(self) -> LongRunRecord:
        """The run's own figures, without its files (a worker writes it beside the transcripts; ``from_record``)."""
        return {"recipe": self.recipe, "mode": self.mode, "dataset": self.dataset, "settings": self.settings,
                "threads": self.threads, "device": self.device, "load_s": self.load_s,
                "peak_ram_mb": self.peak_ram_mb, "resumed": self.resumed, "own_settings": self.own_settings}

    @classmethod
    def from_record(cls, record: LongRunRecord, dataset, transcripts_path: Path) -> LongformRun:
        """The run ``record`` describes, its files re-scored from ``transcripts_path`` against ``dataset``."""
        try:
            return cls(str(record["recipe"]), str(record["mode"]), str(record["dataset"]),
                       rescore(dataset, transcripts_path), dict(record.get("settings") or {}),
                       int(record["threads"]), str(record.get("device", "cpu")), record.get("load_s"),
                       record.get("peak_ram_mb"), int(record.get("resumed") or 0), record.get("own_settings"))
        except (KeyError, TypeError, ValueError) as exc:
            raise WhisperoptError(f"not a long-form run record ({type(exc).__name__}: {exc}); run it again") from None

    def to_row(self, reference: LongformRun | None = None) -> LongRow:
        """The summary row: rates and deltas in percent (points), times in seconds, memory in MiB."""
        s = self.summary
        rams = [f.run_ram_mb for f in self.files if f.run_ram_mb is not None]
        cpu = sum(f.cpu_s for f in self.files)
        row: LongRow = {"recipe": self.recipe, "mode": self.mode, "workload": "long", "dataset": self.dataset,
               "status": "ok", "files": len(self.files), "audio_s": self.audio_s, "eval_s": self.wall_s,
               "rtfx": self.rtfx, "wer": _percent(s.wer), "wer_ci": _percent_pair(s.wer_ci), "cer": _percent(s.cer),
               "cer_ci": _percent_pair(s.cer_ci), "insertions": sum(f.score.words.insertions for f in self.files),
               "stretch_words": s.stretch_words,
               "stretch_words_by_kind": s.stretch_words_by_kind, "stretch_seconds": s.stretch_seconds,
               "stretch_words_per_min": 60 * s.stretch_words / s.stretch_seconds if s.stretch_seconds else None,
               "loops": s.loops, "loop_extra_words": s.loop_extra_words,
               "start_error_median_s": s.start_error_median, "start_error_p90_s": s.start_error_p90,
               "load_s": self.load_s, "peak_ram_mb": self.peak_ram_mb, "run_ram_mb": max(rams) if rams else None,
               "cpu_percent": 100 * cpu / self.wall_s if cpu and self.wall_s > 0 else None,
               "threads": self.threads, "device": self.device, "resumed_files": self.resumed,
               "own_settings": self.own_settings,
               "settings": self.settings, "per_file": [f.to_row() for f in self.files]}
        row.update(paired_fields(reference, self))
        return row


def paired_fields(reference: LongformRun | None, run: LongformRun) -> dict:
    """``run`` against ``reference`` on the files both decoded: paired WER/CER deltas (points, percentile bootstrap
    over files), the speed-up (reference wall / run wall), and the change in words emitted inside stretches (a
    fraction of the reference's: -0.9 is 90 % fewer; None when the reference emitted none)."""
    keys = ("wer_delta", "wer_delta_ci", "wer_delta_significant", "cer_delta", "cer_delta_ci",
            "cer_delta_significant", "paired_files", "speedup", "stretch_words_change", "reference")
    out = dict.fromkeys(keys)
    if reference is None:
        return out
    mine = {f.name: f for f in run.files}
    common = [f for f in reference.files if f.name in mine]
    out["reference"] = f"{reference.recipe} {reference.mode}"
    if not common:
        return out
    out["paired_files"] = len(common)
    for unit, attr in (("wer", "words"), ("cer", "chars")):
        base = [getattr(f.score, attr) for f in common]
        other = [getattr(mine[f.name].score, attr) for f in common]
        if sum(c.reference_length for c in base):
            d = paired_delta_ci(base, other)
            out.update({f"{unit}_delta": 100 * d["delta"], f"{unit}_delta_ci": [100 * d["lo"], 100 * d["hi"]],
                        f"{unit}_delta_significant": d["significant"]})
    wall = sum(mine[f.name].wall_s for f in common)
    out["speedup"] = sum(f.wall_s for f in common) / wall if wall > 0 else None
    ref_words = sum(f.score.stretch_words.total for f in common)
    if ref_words:
        out["stretch_words_change"] = sum(mine[f.name].score.stretch_words.total for f in common) / ref_words - 1
    return out


def _decode(transcriber, runtime, path, opts, language: str | None) -> tuple[list[dict], dict]:
    """Segments (as kept) and what the decode reported, of one input (a path or an array)."""
    if opts is None:
        done = runtime.transcribe_file(path, language=language)
        return [_segment_dict(s) for s in done.segments], {"language": done.language, **done.info}
    result = transcriber.transcribe(path, opts, language=opts.language or language)
    return [_segment_dict(s) for s in result.segments], ({"vad": result.vad} if result.vad else {})


def _resumed(transcripts_path: Path | None, references: dict[str, LongformReference]) -> dict[str, FileResult]:
    if transcripts_path is None:
        return {}
    repair_rows(transcripts_path)
    kept = {}
    for line in read_rows(transcripts_path, key="file"):
        if line.get("file") not in references:
            continue
        try:
            kept[line["file"]] = FileResult.from_line(line, references[line["file"]])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WhisperoptError(f"{transcripts_path}: the line of {str(line['file'])[:80]} is not a whisperopt "
                                  f"long-form transcript ({type(exc).__name__}: {exc}); delete it to decode that file "
                                  "again") from None
    return kept


def _check_dataset(dataset) -> dict[str, LongformReference]:
    missing = [u.id for u in dataset.utterances if getattr(u, "longform", None) is None]
    if missing or not dataset.utterances:
        raise WhisperoptError(f"dataset {dataset.name} is not long-form ({missing[0] if missing else 'no file'} has "
                              "no long-form reference): use librispeech-long:<split>[:hard]")
    return {u.id: u.longform for u in dataset.utterances}


def open_transcriber(recipe, runtime, model_dir: Path, mode: str, opts):
    """The ``Transcriber`` over ``runtime`` for ``mode`` (None for native), its settings checked in one line."""
    from ..transcribe import Transcriber

    if parse_mode(mode)[0] == "native":
        if not runtime.native_long_form:
            raise WhisperoptError(f"recipe {recipe.name} has no long-form pipeline of its own (mode native); run "
                                  f"it in mode {', '.join(m for m in MODES if m != 'native')}")
        return None
    transcriber = Transcriber(runtime, Path(model_dir), recipe.name)
    transcriber.check(opts)
    return transcriber


def evaluate_longform(recipe, artifact, dataset, mode: str, options=None, threads: int = 1, device: str = "cpu",
                      runtime=None, transcripts_path: Path | None = None, warmup: bool = True,
                      log: Callable[[str], None] | None = None) -> LongformRun:
    """Decode every file of the long-form ``dataset`` with ``recipe``'s ``artifact`` in ``mode`` and score it.

    ``options``: ``TranscribeOptions`` or a dict of its fields (the mode's own fields override them; the language,
    when not given, is each file's). ``runtime``: an open runtime of that artifact to reuse (left open); otherwise
    one is opened on ``device`` with ``threads`` and closed at the end. ``transcripts_path``: one line per file
    decoded, appended as it finishes; files already there are not decoded again. ``log`` gets one line per file."""
    log = log or (lambda line: None)
    references = _check_dataset(dataset)
    opts = mode_options(mode, options)
    languages = {u.language for u in dataset.utterances}
    if opts is not None and opts.language is None and len(languages) == 1:  # the dataset's, in the settings too
        opts = replace(opts, language=languages.pop())
    own = runtime is None
    t0 = time.perf_counter()
    runtime = recipe.open(artifact, device, threads) if own else runtime
    load_s = time.perf_counter() - t0 if own else None
    try:
        transcriber = open_transcriber(recipe, runtime, artifact.model_dir, mode, opts)
        done = _resumed(transcripts_path, references)
        todo = [u for u in dataset.utterances if u.id not in done]
        if warmup and todo:  # the first window of the first file: allocations, caches, a VAD model's load
            _decode(transcriber, runtime, _first_window(todo[0].audio), opts, todo[0].language)
        results = dict(done)
        synthetic = is_synthetic(artifact.model_dir)
        for i, u in enumerate(todo, 1):
            results[u.id] = _run_file(transcriber, runtime, u, opts, transcripts_path)
            _log_file(log, recipe.name, mode, f"{i + len(done)}/{len(dataset.utterances)}", results[u.id], synthetic)
        info = runtime.run_info() if opts is None else {}
        settings = asdict(opts) if opts is not None else {"native": runtime.native_long_form,
                                                          **(info.get("decode_settings") or {})}
        return LongformRun(recipe.name, mode, dataset.name, [results[u.id] for u in dataset.utterances], settings,
                           threads, device, load_s, peak_rss_mb(), len(done), info.get("own_settings"))
    finally:
        if own:
            runtime.close()


def _run_file(transcriber, runtime, utterance, opts, transcripts_path: Path | None) -> FileResult:
    """One file decoded from its path, timed, RSS sampled; its line appended to ``transcripts_path``."""
    sampler = RssSampler()
    sampler.start()
    cpu = CpuMeter()
    cpu.start()
    try:
        segments, info = _decode(transcriber, runtime, utterance.audio, opts, utterance.language)
    finally:
        cpu.stop()
        ram = sampler.stop()
    result = FileResult(utterance.id, utterance.longform, segments, utterance.longform.duration, cpu.wall_s,
                        cpu.cpu_s, ram, info)
    if transcripts_path is not None:
        with open(transcripts_path, "a", encoding="utf-8") as f:
            append_row(f, result.transcript_line())
    return result


def _log_file(log, recipe: str, mode: str, where: str, r: FileResult, synthetic: bool = False) -> None:
    s = r.score
    wer = "n/a" if s.wer is None or synthetic else f"{100 * s.wer:.2f} %"  # random weights transcribe noise
    start = "n/a" if s.starts.median is None else f"{s.starts.median:.2f} s"
    log(f"[{where}] {recipe} {mode} {r.name}: {r.audio_s:.0f} s of audio in {r.wall_s:.1f} s (RTFx "
        f"{r.rtfx or 0:.1f}), WER {wer}, {s.stretch_words.total} words in stretches, {len(s.loops)} loops, "
        f"start error median {start}, {r.run_ram_mb or 0:.0f} MiB")


def rescore(dataset, transcripts_path: Path) -> list[FileResult]:
    """The results kept in ``transcripts_path`` scored again against ``dataset``'s references (in dataset order)."""
    references = _check_dataset(dataset)
    kept = _resumed(Path(transcripts_path), references)
    return [kept[u.id] for u in dataset.utterances if u.id in kept]


def _first_window(path) -> np.ndarray:
    """The first 30 s of ``path`` (read as a stream: the rest is never decoded)."""
    from ..data.stream import stream_audio

    block = next(iter(stream_audio(path, block_seconds=N_SAMPLES / SAMPLE_RATE)), np.zeros(0, dtype=np.float32))
    return np.ascontiguousarray(block, dtype=np.float32)
