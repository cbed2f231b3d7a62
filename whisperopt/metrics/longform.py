"""Long-form metrics: what a transcript of minutes of audio gets wrong beyond its word errors.

A long-form file's reference is a ``LongformReference`` (built by ``data/longform.py``, read back from its JSON
sidecar with ``LongformReference.from_dict``): its spoken utterances on the file's time line and the non-speech
stretches inserted between them (the hard variant). A hypothesis is a sequence of segments with ``start``, ``end``,
``text`` and optional ``words`` (``[{"start", "end", "word"}]``, as ``transcribe.result.Segment`` has them): any
object with those attributes or keys is read through ``hyp_segments``, so this layer imports nothing above it.

Per file, ``score_file`` returns a ``FileScore``:

- word and character errors of the whole file (``wer.utterance_errors``: Whisper's English normaliser, jiwer);
- made-up words emitted inside inserted non-speech stretches (``words_in_stretches``): a word counts when its
  midpoint lies in a stretch shrunk by ``STRETCH_MARGIN`` (0.5 s) at both ends, so a real word whose timestamp is a
  few hundred ms late is not counted, and the word alignment against the reference calls it inserted
  (``inserted_words``), so the real words of a segment that straddles a stretch are not counted either (its words
  are spread evenly over its span when it has no word timestamps; ``placed`` keeps every word placed in a stretch,
  the result says which timing it used);
- repetition loops (``repetition_loops``): an n-gram of 1 to ``MAX_NGRAM`` (30) normalised words repeated at least
  ``MIN_REPEATS`` (3) times back to back, the smallest period reported, counted only when the reference does not
  hold the same n-gram repeated as many times ("no no no" read aloud is not a loop);
- timestamp error of segment starts (``start_errors``): for each reference utterance, the distance from its speech
  onset (``speech_start``: the first of three 20-ms frames within 30 dB of its loudest, measured by the builder) to
  the nearest hypothesis segment start; median and 90th percentile in seconds.

``summarise`` pools files: corpus WER/CER with percentile-bootstrap intervals over files (``bootstrap.rate_ci``),
words in stretches per kind, loops, and the pooled start-error median / p90. Everything here is a pure function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import WhisperoptError
from .bootstrap import rate_ci
from .wer import ErrorCounts, corpus_rate, normalise, utterance_errors

STRETCH_KINDS = ("silence", "noise", "music")
STRETCH_MARGIN = 0.5  # seconds shaved off each end of a stretch before counting the words inside it
MIN_REPEATS = 3  # an n-gram said this many times back to back is a loop
MAX_NGRAM = 30  # the longest repeated phrase looked for (a whole looping sentence of Whisper's)


# --- the reference ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpokenSpan:
    """One source utterance on the long-form time line: ``start``/``end`` are where its samples lie (with the
    silence the corpus cut left at its edges), ``speech_start``/``speech_end`` where its speech begins and ends."""

    id: str
    start: float
    end: float
    speech_start: float
    speech_end: float
    text: str


@dataclass(frozen=True)
class Stretch:
    """Inserted non-speech: ``kind`` is one of ``STRETCH_KINDS``; ``detail`` holds how it was made (level, tempo...)."""

    kind: str
    start: float
    end: float
    detail: dict = field(default_factory=dict, compare=False)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class LongformReference:
    """A long-form file's ground truth: what the JSON sidecar next to the audio holds (``to_dict``/``from_dict``)."""

    name: str
    duration: float
    utterances: tuple[SpokenSpan, ...]
    stretches: tuple[Stretch, ...] = ()
    variant: str = "plain"
    seed: int | None = None
    sources: tuple[str, ...] = ()  # the source audio files, in order (relative to the split's directory)

    @property
    def text(self) -> str:
        """The reference transcript: the utterances' transcripts joined in order."""
        return " ".join(u.text for u in self.utterances)

    @property
    def speech_seconds(self) -> float:
        return sum(u.end - u.start for u in self.utterances)

    @property
    def stretch_seconds(self) -> float:
        return sum(s.duration for s in self.stretches)

    def to_dict(self) -> dict:
        return {"format": 1, "name": self.name, "variant": self.variant, "seed": self.seed,
                "duration": self.duration, "sources": list(self.sources),
                "utterances": [asdict(u) for u in self.utterances],
                "stretches": [{"kind": s.kind, "start": s.start, "end": s.end, **s.detail} for s in self.stretches]}

    @classmethod
    def from_dict(cls, data: Mapping, origin: str = "long-form sidecar") -> LongformReference:
        """The reference a sidecar holds; a malformed one is a one-line error naming ``origin``."""
        try:
            utts = tuple(SpokenSpan(str(u["id"]), float(u["start"]), float(u["end"]), float(u["speech_start"]),
                                    float(u["speech_end"]), str(u["text"])) for u in data["utterances"])
            stretches = tuple(Stretch(str(s["kind"]), float(s["start"]), float(s["end"]),
                                      {k: v for k, v in s.items() if k not in ("kind", "start", "end")})
                              for s in data.get("stretches", ()))
            seed = data.get("seed")
            ref = cls(str(data["name"]), float(data["duration"]), utts, stretches, str(data.get("variant", "plain")),
                      None if seed is None else int(seed), tuple(str(s) for s in data.get("sources", ())))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WhisperoptError(f"{origin}: not a long-form reference ({type(exc).__name__}: {exc})") from None
        unknown = sorted({s.kind for s in ref.stretches} - set(STRETCH_KINDS))
        if unknown:
            raise WhisperoptError(f"{origin}: unknown stretch kind {unknown[0]!r}; known: {', '.join(STRETCH_KINDS)}")
        return ref


# --- the hypothesis -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HypWord:
    start: float
    end: float
    word: str


@dataclass(frozen=True)
class HypSegment:
    start: float
    end: float
    text: str
    words: tuple[HypWord, ...] | None = None  # None: no word timestamps


def _get(obj, key, default=None):
    return obj.get(key, default) if isinstance(obj, Mapping) else getattr(obj, key, default)


def hyp_segments(segments: Iterable) -> list[HypSegment]:
    """``HypSegment`` s from anything shaped like ``transcribe.result.Segment`` (attributes or mapping keys
    ``start``, ``end``, ``text``, optional ``words`` as ``{"start", "end", "word"}`` mappings or objects)."""
    out = []
    for s in segments:
        if isinstance(s, HypSegment):
            out.append(s)
            continue
        words = _get(s, "words")
        if words is not None:
            words = tuple(HypWord(float(_get(w, "start")), float(_get(w, "end")), str(_get(w, "word")))
                          for w in words)
        out.append(HypSegment(float(_get(s, "start")), float(_get(s, "end")), str(_get(s, "text") or ""), words))
    return out


def hypothesis_text(segments: Sequence[HypSegment]) -> str:
    return " ".join(s.text.strip() for s in segments if s.text.strip())


def _timed_words(segments: Sequence[HypSegment]) -> tuple[list[tuple[float, str]], str]:
    """(midpoint, word) of every hypothesis word, and the timing used: "words", "segments" or "mixed"."""
    out: list[tuple[float, str]] = []
    used = set()
    for s in segments:
        if s.words is not None:
            used.add("words")
            out.extend(((w.start + w.end) / 2, w.word) for w in s.words if w.word.strip())
            continue
        words = s.text.split()
        if not words:
            continue
        used.add("segments")
        step = (s.end - s.start) / len(words)  # each word gets an equal share of the segment's span
        out.extend((s.start + (i + 0.5) * step, w) for i, w in enumerate(words))
    timing = "mixed" if len(used) == 2 else (used.pop() if used else "words")
    return out, timing


# --- the figures --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StretchWords:
    """Made-up words emitted inside inserted non-speech stretches."""

    total: int  # words placed in a stretch that the alignment with the reference calls inserted
    by_kind: dict  # kind -> such words
    words: tuple[tuple[float, str], ...]  # (midpoint, word) of each counted word
    timing: str  # "words" (word timestamps), "segments" (spread evenly over a segment) or "mixed"
    placed: int = 0  # every word placed in a stretch, real ones included (a segment spanning a stretch)


def inserted_words(reference_text: str, words: Sequence[str]) -> list[bool]:
    """For each hypothesis word (in order), whether the word alignment against ``reference_text`` calls it
    inserted (every one of its normalised pieces aligned to no reference word); a word that normalises to nothing
    (punctuation) is not."""
    import jiwer

    pieces = [normalise(w).split() for w in words]
    flat = [p for ps in pieces for p in ps]
    ref = normalise(reference_text).split()
    if not flat or not ref:
        return [bool(ps) for ps in pieces]
    inserted = [False] * len(flat)
    for chunk in jiwer.process_words(" ".join(ref), " ".join(flat)).alignments[0]:
        if chunk.type == "insert":
            inserted[chunk.hyp_start_idx:chunk.hyp_end_idx] = [True] * (chunk.hyp_end_idx - chunk.hyp_start_idx)
    out, at = [], 0
    for ps in pieces:
        out.append(bool(ps) and all(inserted[at:at + len(ps)]))
        at += len(ps)
    return out


def words_in_stretches(reference: LongformReference, segments: Sequence[HypSegment],
                       margin: float = STRETCH_MARGIN) -> StretchWords:
    timed, timing = _timed_words(segments)
    made_up = inserted_words(reference.text, [w for _, w in timed]) if reference.stretches else []
    by_kind = {k: 0 for k in STRETCH_KINDS}
    counted, placed = [], 0
    for (mid, word), new in zip(timed, made_up):
        for s in reference.stretches:
            if s.start + margin <= mid < s.end - margin:
                placed += 1
                if new:
                    by_kind[s.kind] = by_kind.get(s.kind, 0) + 1
                    counted.append((mid, word))
                break
    return StretchWords(len(counted), by_kind, tuple(counted), timing, placed)


@dataclass(frozen=True)
class Loop:
    start: int  # index of its first word in the normalised word sequence
    ngram: tuple[str, ...]
    repeats: int

    @property
    def extra_words(self) -> int:
        """Words beyond the first saying of the n-gram."""
        return (self.repeats - 1) * len(self.ngram)


def find_loops(words: Sequence[str], min_repeats: int, max_ngram: int) -> list[Loop]:
    """Every n-gram of 1 to ``max_ngram`` of ``words`` said ``min_repeats`` times or more back to back, left to
    right, each at its smallest period (also the transcriber's repetition guard, ``transcribe/guards.py``)."""
    loops = []
    i = 0
    while i < len(words):
        found = None
        for n in range(1, min(max_ngram, (len(words) - i) // min_repeats) + 1):
            reps = 1
            while words[i + reps * n:i + (reps + 1) * n] == words[i:i + n]:
                reps += 1
            if reps >= min_repeats:
                found = Loop(i, tuple(words[i:i + n]), reps)
                break  # the smallest period: "ha ha ha ha" is "ha" x4, not "ha ha" x2
        if found:
            loops.append(found)
            i += found.repeats * len(found.ngram)
        else:
            i += 1
    return loops


def repetition_loops(hypothesis: str, reference: str = "", min_repeats: int = MIN_REPEATS,
                     max_ngram: int = MAX_NGRAM) -> list[Loop]:
    """Loops in the normalised ``hypothesis`` that the normalised ``reference`` does not hold as many times."""
    in_reference: dict[tuple[str, ...], int] = {}
    for loop in find_loops(normalise(reference).split(), min_repeats, max_ngram):
        in_reference[loop.ngram] = max(in_reference.get(loop.ngram, 0), loop.repeats)
    return [loop for loop in find_loops(normalise(hypothesis).split(), min_repeats, max_ngram)
            if loop.repeats > in_reference.get(loop.ngram, 0)]


@dataclass(frozen=True)
class StartErrors:
    """Per reference utterance, seconds from its speech onset to the nearest hypothesis segment start."""

    distances: tuple[float, ...]
    median: float | None
    p90: float | None


def _start_stats(distances: Sequence[float]) -> StartErrors:
    if not distances:
        return StartErrors((), None, None)
    med, p90 = np.percentile(np.asarray(distances, dtype=np.float64), [50, 90])
    return StartErrors(tuple(distances), float(med), float(p90))


def start_errors(reference: LongformReference, segments: Sequence[HypSegment]) -> StartErrors:
    """No hypothesis segment at all: no distances (median and p90 None)."""
    starts = np.array(sorted(s.start for s in segments if s.text.strip()), dtype=np.float64)
    if starts.size == 0:
        return StartErrors((), None, None)
    return _start_stats([float(np.min(np.abs(starts - u.speech_start))) for u in reference.utterances])


@dataclass(frozen=True)
class FileScore:
    name: str
    words: ErrorCounts
    chars: ErrorCounts
    stretch_words: StretchWords
    loops: tuple[Loop, ...]
    starts: StartErrors
    speech_seconds: float
    stretch_seconds: float

    @property
    def wer(self) -> float | None:
        return corpus_rate([self.words])


def score_file(reference: LongformReference, segments: Iterable) -> FileScore:
    """Every long-form figure of one file; ``segments`` as ``hyp_segments`` reads them."""
    segs = hyp_segments(segments)
    text = hypothesis_text(segs)
    words, chars = utterance_errors(reference.text, text)
    return FileScore(reference.name, words, chars, words_in_stretches(reference, segs),
                     tuple(repetition_loops(text, reference.text)), start_errors(reference, segs),
                     reference.speech_seconds, reference.stretch_seconds)


@dataclass(frozen=True)
class LongformSummary:
    files: int
    wer: float | None  # fractions, like wer.corpus_rate
    wer_ci: tuple[float, float] | None
    cer: float | None
    cer_ci: tuple[float, float] | None
    stretch_words: int
    stretch_words_by_kind: dict
    stretch_seconds: float
    loops: int
    loop_extra_words: int
    start_error_median: float | None
    start_error_p90: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _ci(counts: list[ErrorCounts]) -> tuple[float, float] | None:
    return rate_ci(counts) if counts and sum(c.reference_length for c in counts) else None


def summarise(scores: Sequence[FileScore]) -> LongformSummary:
    """Pool ``scores`` of several files: corpus rates with bootstrap intervals over files, summed counts."""
    words = [s.words for s in scores]
    chars = [s.chars for s in scores]
    by_kind = {k: sum(s.stretch_words.by_kind.get(k, 0) for s in scores) for k in STRETCH_KINDS}
    starts = _start_stats([d for s in scores for d in s.starts.distances])
    return LongformSummary(len(scores), corpus_rate(words), _ci(words), corpus_rate(chars), _ci(chars),
                           sum(by_kind.values()), by_kind, sum(s.stretch_seconds for s in scores),
                           sum(len(s.loops) for s in scores), sum(lp.extra_words for s in scores for lp in s.loops),
                           starts.median, starts.p90)
