"""Voice activity detection for every engine (``--vad-filter``): Silero VAD from faster-whisper's kept module.

The detector is faster-whisper's ``faster_whisper.vad`` (``get_speech_timestamps`` over the Silero v6 ONNX model it
ships, its ``VadOptions``, its ``SpeechTimestampsMap``), not a detector of our own; the options carry its names.
Like faster-whisper's ``BatchedInferencePipeline`` (``collect_chunks`` + ``restore_speech_timestamps``):

* speech regions (each padded by ``speech_pad_ms``, split by the detector at a pause once longer than
  ``max_chunk_s``) are joined in order into chunks of at most ``max_chunk_s`` of speech, the silence between them left
  out; a region still longer is cut into equal parts, never truncated. Non-speech is never decoded;
* ``batched`` decodes each chunk as one window, ``batch_size`` chunks per engine call (a tail the decode broke
  off decoded again, ``tails.py``); ``plain`` gives one segment
  per chunk (its chunks also end at a gap over ``PLAIN_GAP_S``); ``sequential`` runs the openai-style loop
  (conditioning and fallback as without VAD) over all the speech joined, like faster-whisper's ``WhisperModel``
  with ``vad_filter`` (``Joined`` says why not chunk by chunk);
* segment and word times on a chunk's audio go back to the input's time line region by region
  (``Chunk.restore``).

``get_speech_timestamps`` wants the whole signal, which for a 2-hour file is 460 MB of float32 held next to its
padded copy. ``SpeechChunks`` runs it over the stream span by span (``SPAN_S``): the regions that end more than a
margin (``min_silence_ms`` + twice ``speech_pad_ms`` + 1 s) before a span's end are final (what follows cannot change
them), the next span starts where the last final region ends (on the whole stream's 512-sample frame grid), so at
most a span and one chunk of audio are held. Where a span starts mid-speech, Silero's state starts afresh: a region
edge there may move by a frame from what one call over the whole array gives.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import numpy as np

from ..constants import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from ..errors import WhisperoptError
from ..recipes.base import DecodeOptions
from .result import Segment
from .tails import decode_to_end

# faster-whisper's BatchedInferencePipeline defaults (its VadOptions defaults but a 160-ms minimum silence, and the
# speech split at the chunk length): short pauses split regions, so chunks fill up to max_chunk_s
VAD_DEFAULTS = {"vad_threshold": 0.5, "vad_min_silence_ms": 160, "vad_speech_pad_ms": 400, "vad_min_speech_ms": 0,
                "vad_max_chunk_s": 30.0}
#: the fields ``TranscribeOptions`` and ``ServeSettings`` carry, named like the flags
VAD_FIELDS = ("vad_filter", *VAD_DEFAULTS)
MAX_CHUNK_S = 30.0  # a chunk is one Whisper window
RUN_ON_S = 0.04  # a segment end this close to (or past) the next segment's start ran on into it (two timestamp steps)
FRAME = 512  # samples per Silero frame (get_speech_timestamps' window)
SPAN_S = 300.0  # seconds of the stream the detector sees at once (19 MB of float32)
# plain mode's segment is its whole chunk (no timestamps inside): a chunk ends at a gap longer than this, so that no
# segment spans a long stretch of non-speech (at the defaults: a pause of 1.8 s)
PLAIN_GAP_S = 1.0
EXTRA = "pip install 'whisperopt[ct2]'"  # the extra that installs faster-whisper (and onnxruntime with it)


def silero():
    """``faster_whisper.vad``, or a one-line error naming the extra that installs it."""
    try:
        from faster_whisper import vad
    except ImportError as exc:
        raise WhisperoptError(f"--vad-filter needs faster-whisper's Silero VAD ({exc.name or 'faster_whisper'} is "
                              f"missing): {EXTRA}") from None
    if importlib.util.find_spec("onnxruntime") is None:  # the Silero model runs on it
        raise WhisperoptError(f"--vad-filter needs onnxruntime for faster-whisper's Silero VAD: {EXTRA}")
    return vad


def check_vad(holder) -> None:
    """One-line errors for the ``VAD_FIELDS`` of ``holder`` (``TranscribeOptions``, ``ServeSettings``); with
    ``vad_filter``, also that faster-whisper can be imported."""
    limits = [("--vad-threshold", holder.vad_threshold, 0.01, 0.99),
              ("--vad-min-silence-ms", holder.vad_min_silence_ms, 0, 60_000),
              ("--vad-speech-pad-ms", holder.vad_speech_pad_ms, 0, 5_000),
              ("--vad-min-speech-ms", holder.vad_min_speech_ms, 0, 60_000),
              ("--vad-max-chunk-s", holder.vad_max_chunk_s, 1, MAX_CHUNK_S)]
    for flag, value, least, most in limits:
        if not least <= value <= most:
            raise WhisperoptError(f"{flag} must be between {least:g} and {most:g}, got {value:g}")
    if not holder.vad_filter:
        given = [f"--{k.replace('_', '-')}" for k, v in VAD_DEFAULTS.items() if getattr(holder, k) != v]
        if given:
            raise WhisperoptError(f"{', '.join(given)} set without --vad-filter: add --vad-filter, or leave "
                                  f"{'them' if len(given) > 1 else 'it'} out")
        return
    if 2 * holder.vad_speech_pad_ms / 1000 + 0.5 > holder.vad_max_chunk_s:
        raise WhisperoptError(f"--vad-speech-pad-ms {holder.vad_speech_pad_ms:g} on both sides leaves under half a "
                              f"second of speech in a --vad-max-chunk-s {holder.vad_max_chunk_s:g} chunk")
    silero()


def vad_record(holder) -> dict:
    """The VAD options of ``holder`` as they go into a result (``TranscriptionInfo.vad``, the JSON output)."""
    return {k.removeprefix("vad_"): getattr(holder, k) for k in VAD_DEFAULTS}


@dataclass(frozen=True)
class Chunk:
    """Speech regions joined into one window. An empty chunk (no regions) only marks progress."""

    regions: tuple[tuple[int, int], ...]  # [start, end) of each region in input samples, in order
    audio: np.ndarray  # the regions' samples, joined
    pad: int = 0  # samples of padding (not speech) each region holds at a join where silence was left out

    @property
    def start(self) -> float:
        return self.regions[0][0] / SAMPLE_RATE

    @property
    def end(self) -> float:
        return self.regions[-1][1] / SAMPLE_RATE

    def restore(self, segments: Iterable[Segment]) -> list[Segment]:
        """``segments`` (in order) timed on the chunk's audio, re-timed on the input's time line like faster-whisper's
        ``restore_speech_timestamps``: a time moves by the silence left out before its region, and an end exactly at
        a join stays in the region before it.

        Whisper's ends run late (a segment's to the next segment's start, a word's into the silence after it), and on
        joined audio that lies across a gap; so that nothing spans a gap it did not speak in, where faster-whisper
        maps the end on its own (and a word by its middle):
        * a word that starts before a gap ends there, at its region's end (no word holds the silence a gap left
          out); a segment with words spans them;
        * a segment without words whose end runs on into the next segment (or only into the padding at the head of
          the region after a gap) ends at the end of the region before; its start, if in the padding at the tail of
          a region before a gap, goes forward to the next region (the padding is not speech)."""
        times = silero().SpeechTimestampsMap([{"start": s, "end": e} for s, e in self.regions], SAMPLE_RATE, 3)
        segs, out = list(segments), []
        for i, seg in enumerate(segs):
            if seg.words:
                words = []
                for w in seg.words:
                    j, k = times.get_chunk_index(w["start"]), times.get_chunk_index(w["end"], is_end=True)
                    a = self._clamp(times.get_original_time(w["start"], j), words[-1]["start"] if words else 0.0)
                    gaps = [m for m in range(j + 1, k + 1) if self._gap(m)]
                    b = self.regions[gaps[0] - 1][1] / SAMPLE_RATE if gaps else times.get_original_time(w["end"], k)
                    words.append({**w, "start": a, "end": self._clamp(b, a)})
                out.append(replace(seg, start=words[0]["start"], end=max(w["end"] for w in words), words=words))
                continue
            j = times.get_chunk_index(seg.start)
            start = times.get_original_time(seg.start, j)
            if j + 1 < len(self.regions) and self._gap(j + 1) and start * SAMPLE_RATE >= self.regions[j][1] - self.pad:
                j += 1
                start = self.regions[j][0] / SAMPLE_RATE
            k = times.get_chunk_index(seg.end, is_end=True)
            end = times.get_original_time(seg.end, k)
            runs_on = i + 1 < len(segs) and seg.end >= segs[i + 1].start - RUN_ON_S
            if j < k and self._gap(k) and (runs_on or end * SAMPLE_RATE <= self.regions[k][0] + self.pad):
                end = self.regions[k - 1][1] / SAMPLE_RATE
            start = self._clamp(start)
            out.append(replace(seg, start=start, end=self._clamp(end, start)))
        return out

    def _clamp(self, t: float, low: float = 0.0, high: float = float("inf")) -> float:
        return round(min(max(t, self.start, low), self.end, high), 3)

    def _gap(self, k: int) -> bool:
        """Was silence left out before region ``k``?"""
        return self.regions[k][0] > self.regions[k - 1][1]


class SpeechChunks:
    """The speech of a stream of 16 kHz blocks as ``Chunk``s of at most ``vad_max_chunk_s`` (see the module's
    docstring); an empty chunk after every span scanned. ``total``: samples read; ``speech``, ``chunks``: what the
    chunks handed out hold; ``done()``: the seconds of input before which nothing is left to hand out."""

    def __init__(self, blocks: Iterable[np.ndarray], holder, span_s: float = SPAN_S, max_gap_s: float | None = None):
        vad = silero()
        self._detect = vad.get_speech_timestamps
        self._options = vad.VadOptions(threshold=holder.vad_threshold,
                                       min_silence_duration_ms=holder.vad_min_silence_ms,
                                       speech_pad_ms=holder.vad_speech_pad_ms,
                                       min_speech_duration_ms=holder.vad_min_speech_ms,
                                       max_speech_duration_s=holder.vad_max_chunk_s)
        self._limit = int(holder.vad_max_chunk_s * SAMPLE_RATE)
        self._max_gap = None if max_gap_s is None else int(max_gap_s * SAMPLE_RATE)
        self._pad = int(holder.vad_speech_pad_ms * SAMPLE_RATE / 1000)
        margin = holder.vad_min_silence_ms / 1000 + 2 * holder.vad_speech_pad_ms / 1000 + 1.0
        self._margin = int(margin * SAMPLE_RATE)
        self._span = max(int(span_s * SAMPLE_RATE), 4 * (self._margin + self._limit))
        self._blocks = iter(blocks)
        self._pending: list[tuple[int, int, np.ndarray]] = []
        self.total = self.decided = self.speech = self.chunks = 0

    def done(self) -> float:
        return (self._pending[0][0] if self._pending else self.decided) / SAMPLE_RATE

    def __iter__(self) -> Iterator[Chunk]:
        size = 0
        for region in self._regions():
            if region is None:
                yield Chunk((), np.zeros(0, np.float32))
                continue
            for piece in _split(*region, self._limit):
                gap = piece[0] - self._pending[-1][1] if self._pending else 0
                if self._pending and (size + piece[1] - piece[0] > self._limit or
                                      self._max_gap is not None and gap > self._max_gap):
                    yield self._flush()
                    size = 0
                self._pending.append(piece)
                size += piece[1] - piece[0]
        if self._pending:
            yield self._flush()

    def _flush(self) -> Chunk:
        chunk = Chunk(tuple((s, e) for s, e, _ in self._pending), np.concatenate([a for _, _, a in self._pending]),
                      self._pad)
        self._pending = []
        self.speech += len(chunk.audio)
        self.chunks += 1
        return chunk

    def _regions(self) -> Iterator[tuple[int, int, np.ndarray] | None]:
        """(start, end, samples) of each speech region in order; None after each span."""
        data, base, exhausted, last = np.zeros(0, np.float32), 0, False, 0
        while not exhausted:
            pieces, have = [data], len(data)
            while have < self._span:
                block = next(self._blocks, None)
                if block is None:
                    exhausted = True
                    break
                pieces.append(np.asarray(block, dtype=np.float32).reshape(-1))
                have += len(pieces[-1])
                self.total += len(pieces[-1])
            data = np.concatenate(pieces)
            found = self._detect(data, self._options) if len(data) else []
            keep, resume = found, len(data)
            if not exhausted:
                keep = []
                for r in found:  # final: ends a margin before the span's end
                    if r["end"] > len(data) - self._margin:
                        break
                    keep.append(r)
                resume = keep[-1]["end"] if keep else found[0]["start"] if found else len(data) - self._margin
                resume -= (base + resume) % FRAME  # on the frame grid of the whole stream: the same frames
                if resume <= 0:  # one region over the whole span (cannot happen while regions are <= 30 s): go on
                    keep, resume = found, len(data)
            for r in keep:
                start = max(r["start"], last - base)  # (a span starts up to a frame before the last region's end)
                if r["end"] > start:
                    yield base + start, base + r["end"], data[start:r["end"]].copy()
                    last = base + r["end"]
            data, base = data[resume:], base + resume
            self.decided = base
            yield None


def _split(start: int, end: int, audio: np.ndarray, limit: int) -> list[tuple[int, int, np.ndarray]]:
    """A region as equal parts of at most ``limit`` samples."""
    n = -(-(end - start) // limit)
    edges = [round(k * (end - start) / n) for k in range(n + 1)]
    return [(start + a, start + b, audio[a:b]) for a, b in zip(edges, edges[1:])]


def speech_segments(tr, blocks: Iterable[np.ndarray], name: str, opts, info,
                    progress: Callable[[float], None]) -> Iterator[Segment]:
    """``Transcriber.stream`` with ``vad_filter``: the segments of the speech Silero finds in ``blocks``, for
    ``tr`` (a ``Transcriber``) in ``opts.mode``. The language (when not given) is detected from the first chunk
    before this returns; ``info.vad`` records the options, then the speech found and the chunks decoded."""
    chunks = SpeechChunks(blocks, opts, max_gap_s=PLAIN_GAP_S if opts.mode == "plain" else None)
    info.vad = {**vad_record(opts), "speech_s": 0.0, "chunks": 0}
    stream, head = iter(chunks), []
    if info.language is None:
        for chunk in stream:
            head.append(chunk)
            if chunk.regions:
                tr._ensure_language(chunk.audio, info)
                break
    return _decode(tr, itertools.chain(head, stream), chunks, name, opts, info, progress)


def _decode(tr, stream: Iterator[Chunk], chunks: SpeechChunks, name: str, opts, info,
            progress: Callable[[float], None]) -> Iterator[Segment]:
    if opts.mode == "sequential":
        yield from _sequential(tr, stream, opts, info, progress)
    else:
        yield from _chunked(tr, stream, chunks, opts, info, progress)
    info.duration = chunks.total / SAMPLE_RATE
    info.vad.update(speech_s=round(chunks.speech / SAMPLE_RATE, 3), chunks=chunks.chunks)
    if chunks.total == 0:
        raise WhisperoptError(f"no audio samples in {name} (zero-length audio)")
    progress(info.duration)


def _chunked(tr, stream: Iterator[Chunk], chunks: SpeechChunks, opts, info,
             progress: Callable[[float], None]) -> Iterator[Segment]:
    """batched and plain: each chunk one window, ``batch_size`` per engine call."""
    for batch in _batches(stream, chunks, opts.batch_size, progress):
        language = tr._ensure_language(batch[0].audio, info)
        if opts.mode == "batched":
            for c, segs in zip(batch, decode_to_end(tr, [(0.0, c.audio) for c in batch], opts, language)):
                yield from c.restore(segs)
        else:
            decode = DecodeOptions(beam_size=opts.beam_size, language=language, task=opts.task, batch_size=len(batch))
            for c, text in zip(batch, tr.runtime.transcribe([c.audio for c in batch], decode)):
                if text.text.strip():
                    yield Segment(round(c.start, 3), round(c.end, 3), text.text, list(text.tokens))


def _sequential(tr, stream: Iterator[Chunk], opts, info, progress: Callable[[float], None]) -> Iterator[Segment]:
    """The openai-style loop over all the speech joined (``Joined``), each segment placed on the input's time line
    once the next one is known (``Chunk.restore`` looks at where the next one starts)."""
    joined = Joined(stream)
    held = None
    for seg in tr._sequential(joined, 0, opts, info, lambda seconds: progress(joined.original(seconds))):
        if held is not None:
            yield joined.restore([held, seg])[0]
        held = seg
    if held is not None:
        yield joined.restore([held])[0]


class Joined:
    """The chunks' speech as one stream, read like a stream buffer (``window``): what ``sequential`` decodes, as
    faster-whisper's ``WhisperModel.transcribe`` with ``vad_filter`` does. Decoding each chunk on its own, with the
    previous chunk's text as the prompt, lost the timestamps (trained tiny.en on CTranslate2 int8, chapter 1088/134315 of
    train-clean-5: windows of 20-29 s after the first gave one timestamp each, so one segment per chunk). Holds the
    chunks from one window before the current one on."""

    def __init__(self, stream: Iterator[Chunk]):
        self._stream = stream
        self._held: list[tuple[int, Chunk]] = []  # (where the chunk starts in the joined stream, the chunk)
        self._end = 0  # joined samples read

    def window(self, offset: int, length: int) -> np.ndarray:
        while self._held and self._held[0][0] + len(self._held[0][1].audio) < offset - N_SAMPLES:
            self._held.pop(0)
        while self._end < offset + length and (chunk := next(self._stream, None)) is not None:
            if chunk.regions:
                self._held.append((self._end, chunk))
                self._end += len(chunk.audio)
        parts = [c.audio[max(0, offset - at):max(0, offset + length - at)] for at, c in self._held
                 if at < offset + length and at + len(c.audio) > offset]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def _merged(self) -> tuple[Chunk, float]:
        """The chunks held as one, and where it starts in the joined stream (seconds)."""
        regions = tuple(r for _, c in self._held for r in c.regions)
        return Chunk(regions, np.zeros(0, np.float32), self._held[0][1].pad), self._held[0][0] / SAMPLE_RATE

    def restore(self, segments: list[Segment]) -> list[Segment]:
        chunk, at = self._merged()
        return chunk.restore([_shifted(s, -at) for s in segments])

    def original(self, seconds: float) -> float:
        """A time of the joined stream on the input's time line (0 before any speech)."""
        if not self._held:
            return 0.0
        return self.restore([Segment(seconds, seconds, "")])[0].start


def _shifted(seg: Segment, dt: float) -> Segment:
    words = None if seg.words is None else [{**w, "start": w["start"] + dt, "end": w["end"] + dt} for w in seg.words]
    return replace(seg, start=seg.start + dt, end=seg.end + dt, words=words)


def _batches(stream: Iterator[Chunk], chunks: SpeechChunks, size: int,
             progress: Callable[[float], None]) -> Iterator[list[Chunk]]:
    """The chunks with speech, ``size`` at a time; ``progress`` told what is done whenever none is held."""
    batch: list[Chunk] = []
    for chunk in stream:
        if chunk.regions and len(chunk.audio) >= HOP_LENGTH:
            batch.append(chunk)
        if len(batch) == size:
            yield batch
            batch = []
        if not batch:
            progress(chunks.done())
    if batch:
        yield batch


def speech_clips(clips: list[np.ndarray], opts) -> tuple[list[np.ndarray], list[Chunk | None]]:
    """``transcribe_clips`` with ``vad_filter``: each clip's speech joined into one window (a clip is one window
    already), or an empty array where Silero finds none; and the chunk that maps its times back (None: none)."""
    out, maps = [], []
    for clip in clips:
        parts = [c for c in SpeechChunks([clip], opts) if c.regions]
        chunk = Chunk(tuple(r for c in parts for r in c.regions), np.concatenate([c.audio for c in parts]),
                      parts[0].pad) if parts else None
        out.append(chunk.audio if chunk else np.zeros(0, np.float32))
        maps.append(chunk)
    return out, maps


def restore_clips(results: list, maps: list[Chunk | None], opts) -> None:
    """Put the times of ``speech_clips``' results back on each clip's own time line; record the VAD in each."""
    for result, chunk in zip(results, maps):
        if chunk is not None:
            result.segments = chunk.restore(result.segments)
        speech = len(chunk.audio) / SAMPLE_RATE if chunk else 0.0
        result.vad = {**vad_record(opts), "speech_s": round(speech, 3), "chunks": int(chunk is not None)}
