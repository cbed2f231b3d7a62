"""Guards against made-up text in the sequential loop: openai-whisper's ``hallucination_silence_threshold`` and a
repetition guard.

``hallucination_silence_threshold`` (seconds; needs word timestamps, as in openai-whisper and faster-whisper): a
segment whose first eight words look made up (``segment_anomaly``: improbable, or implausibly short or long words)
and that stands in silence longer than the threshold (or next to another such segment, or at a window's edge) is
dropped with everything after it in its window, and the loop seeks to it; a window whose first worded segment is
such a segment after a leading silence longer than the threshold is skipped up to that segment. Without a suspect
segment the loop seeks to the last word's end when more than the threshold is left in the window.

Repetition (``loop_repeats``): a window whose text says one n-gram (1 to ``MAX_NGRAM`` words) that many times or
more in a row fails like a too-high compression ratio (re-decoded at the next temperature); if it still loops at the
last temperature, the repeats after the first ``loop_repeats - 1`` are cut from its segments.
"""

from __future__ import annotations

from dataclasses import replace

from ..constants import FRAMES_PER_SECOND
from ..metrics.longform import find_loops
from .result import Segment

PUNCTUATION = "\"'“¿([{-\"'.。,，!！?？:：”)]}、"  # openai-whisper's: not counted as words
MAX_NGRAM = 12  # words in the longest repeated n-gram looked for


def word_anomaly_score(word: dict) -> float:
    """openai-whisper's score of one word: improbable (< 0.15), very short (< 0.133 s) or very long (> 2 s)."""
    duration = word["end"] - word["start"]
    score = 1.0 if word.get("probability", 0.0) < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def segment_anomaly(seg: Segment | None) -> bool:
    """Do the first eight words of ``seg`` look made up (openai-whisper's ``is_segment_anomaly``)?"""
    if seg is None or not seg.words:
        return False
    words = [w for w in seg.words if w["word"] not in PUNCTUATION][:8]
    score = sum(word_anomaly_score(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def _next_worded(segs: list[Segment]) -> Segment | None:
    return next((s for s in segs if s.words), None)


def _last_word_end(segs: list[Segment]) -> float | None:
    ends = [w["end"] for s in segs for w in (s.words or [])]
    return ends[-1] if ends else None


def skip_hallucinations(segs: list[Segment], threshold: float, seek: int, frames: int, advance: int,
                        single_ending: bool, last_speech: float, content_end: float | None,
                        window_s: float = 30.0) -> tuple[list[Segment], int]:
    """The segments of one window kept, and the frame the next window starts at. ``seek``: this window's first
    frame; ``frames``: its length; ``advance``: how far the timestamps alone would move; ``last_speech``: where the
    last kept word ended (s); ``content_end``: the input's end when known (s)."""
    offset = seek / FRAMES_PER_SECOND
    window_end = offset + window_s
    nxt = seek + advance
    if not single_ending:
        last = _last_word_end(segs)
        if last is not None and last > offset:
            nxt = round(last * FRAMES_PER_SECOND) if window_end - last > threshold else seek + frames
    first = _next_worded(segs)
    if segment_anomaly(first) and first.start - offset > threshold:
        return [], seek + round((first.start - offset) * FRAMES_PER_SECOND)
    before = last_speech
    for i, seg in enumerate(segs):
        if not seg.words:
            continue
        if segment_anomaly(seg):
            after = _next_worded(segs[i + 1:])
            next_start = after.words[0]["start"] if after else offset + frames / FRAMES_PER_SECOND
            silence_before = seg.start - before > threshold or seg.start < threshold or seg.start - offset < 2.0
            silence_after = (next_start - seg.end > threshold or segment_anomaly(after)
                             or window_end - seg.end < 2.0)
            if silence_before and silence_after:
                nxt = round(max(offset + 1, seg.start) * FRAMES_PER_SECOND)
                if content_end is not None and content_end - seg.end < threshold:
                    nxt = round(content_end * FRAMES_PER_SECOND)
                return segs[:i], max(nxt, seek + 1)
        before = seg.end
    return segs, max(nxt, seek + 1)


def _norm(word: str) -> str:
    return word.strip(PUNCTUATION + " ").lower()


def find_loop(words: list[str], repeats: int) -> tuple[int, int, int] | None:
    """The first n-gram (1 to ``MAX_NGRAM`` words) said ``repeats`` times or more in a row in ``words``:
    (where it starts, its length, how many times), compared without case and punctuation; None if there is none."""
    for loop in find_loops([_norm(w) for w in words], repeats, MAX_NGRAM):
        if any(loop.ngram):
            return loop.start, len(loop.ngram), loop.repeats
    return None


def cut_loops(segs: list[Segment], repeats: int) -> list[Segment]:
    """``segs`` with each loop cut to ``repeats - 1`` sayings, segment by segment (a cut segment keeps its times
    and tokens, and loses its words)."""
    out = []
    for seg in segs:
        words = seg.text.split()
        while (loop := find_loop(words, repeats)) is not None:
            start, n, times = loop
            words = words[:start + n * (repeats - 1)] + words[start + n * times:]
        text = " " + " ".join(words) if words else ""
        out.append(seg if text.strip() == seg.text.strip() else replace(seg, text=text, words=None))
    return [s for s in out if s.text.strip()]


__all__ = ["MAX_NGRAM", "cut_loops", "find_loop", "segment_anomaly", "skip_hallucinations", "word_anomaly_score"]
