"""Packed windows: several short clips joined by silence into one 30-s window, decoded once, split back by timestamp.

A 7-s clip decoded alone still costs a full 30-s encoder pass (the engine pads it). Packing puts several clips, each
followed by ``gap`` seconds of silence, into one window (``plan_windows``: first fit in input order, a clip is never
split across windows, one too long to share a window is decoded alone as before), decodes the window with timestamp
tokens, cuts it into segments with the long-form parser (``segments.split_window``) and gives each segment to the clip
its start timestamp falls in (``PackedWindow.split``), with times from that clip's own start.

Whisper predicts timestamps at 0.02-s steps and they drift (starts by up to ~0.5 s, ends by more, often across the
gap to the next segment's start), so the gap is what keeps clips apart. A window's last segment may end without a
closing timestamp: ``split_window(final=True)`` ends it at the window's end, in the last clip's trailing gap. Where
the window's text cannot be trusted for a clip (no timestamps at all, the window left unfinished before the clip's
end, a clip whose first words ran into the previous clip's segment, a clip skipped) ``split`` says why and the caller
decodes that clip again alone (``Transcriber.transcribe_clips`` does, and counts it): packing may cost a few extra
windows, never a clip's words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..constants import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from ..errors import WhisperoptError
from .segments import TIME_PRECISION, RawSegment, Vocabulary, split_window

# Silence after every clip of a packed window (the last clip's gap is the window's tail margin) and the extra margin
# a window keeps free at its end. Chosen on non-test audio with the trained tiny.en on CTranslate2 int8, greedy,
# 2 threads on a shared 2-core machine (RTFx noisy), benchmarks/pack_gap.py: windows decoded (+ clips decoded again
# alone), corpus WER, paired ΔWER packed − unpacked [95 % paired-bootstrap CI], RTFx (unpacked: the bench's measured
# pass).
# librispeech:dev-clean, first 40: 30 of the shared copy's 40 dev-clean files are digital silence (speakers 84 and
# 251; every engine answers "you"), so only 10 clips speak and no setting differs there:
#   unpacked 40 windows, WER 74.34, RTFx 5.5
#   gap 0.5 tail 0: 9 + 24, +0.00 [+0.00, +0.00], 6.9 | gap 0.5 tail 2: 10 + 23, +0.00 [+0.00, +0.00], 6.7
#   gap 1   tail 0: 10 + 26, +0.00 [+0.00, +0.00], 6.5 | gap 1   tail 2: 11 + 25, +0.00 [+0.00, +0.00], 6.0
#   gap 2   tail 0: 12 + 23, +0.13 [+0.00, +0.42], 6.5 | gap 2   tail 2: 12 + 22, -0.13 [-0.45, +0.00], 6.7
# LibriSpeech train-clean-5 (Mini LibriSpeech), first 40 (527 s, 13 s per clip), which decided:
#   unpacked 40 windows, WER 3.89, RTFx 9.2
#   gap 0.5 tail 0: 20 + 14, +1.08 [-0.38, +2.85], 8.8 | gap 0.5 tail 2: 26 + 7, +0.77 [-0.20, +2.10], 9.4
#   gap 1   tail 0: 23 + 5, +0.00 [-0.60, +0.69], 9.7  | gap 1   tail 2: 29 + 2, +0.06 [-0.61, +0.78], 9.6
#   gap 2   tail 0: 29 + 3, +0.06 [-0.60, +0.77], 9.7  | gap 2   tail 2: 33 + 0, +0.32 [-0.38, +1.04], 9.4
# Half a second is too short (Whisper runs clips together: late starts, unfinished windows); 1 s is as accurate as 2 s
# in fewer windows, and an extra tail margin only costs windows.
DEFAULT_GAP_S = 1.0
TAIL_MARGIN_S = 0.0
MAX_GAP_S = 10.0  # beyond this a "gap" is most of a window: a typo, not a plan
FINISH_TOLERANCE_S = 0.5  # audio a member may hold past where an unfinished window's output stops (trailing silence)
START_SLACK_S = 0.5  # a segment starting this close to a member's end starts the next one (start timestamps run early)
LATE_S = 1.0  # a member's first segment starts at most this long after its audio (leading silence, timestamp drift)
#: why ``PackedWindow.split`` sends a member of a packed window to be decoded again alone
REDECODE = ("no timestamps", "unfinished", "late start", "no text")


@dataclass(frozen=True)
class PackedWindow:
    """One window of a plan: the clips it holds (indices into the plan's input, in input order) and where each starts
    and how long it is, in samples from the window's start."""

    members: tuple[int, ...]
    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    gap: int  # samples of silence after each member

    @property
    def packed(self) -> bool:
        return len(self.members) > 1

    @property
    def samples(self) -> int:
        """The window's audio length: a single clip as it is; packed clips with their gaps (the last one's too)."""
        return self.starts[-1] + self.lengths[-1] + (self.gap if self.packed else 0)

    def audio(self, clips: list[np.ndarray]) -> np.ndarray:
        """The window's 16 kHz samples: the member clips at their starts, silence between them."""
        if not self.packed:
            return clips[self.members[0]]
        out = np.zeros(self.samples, dtype=np.float32)
        for i, start, n in zip(self.members, self.starts, self.lengths):
            out[start:start + n] = clips[i][:n]
        return out

    def split(self, tokens: list[int], vocab: Vocabulary) -> list[list[RawSegment] | str]:
        """The window's decoded tokens (with timestamp tokens) as segments per member, times in seconds from that
        member's start and clamped to its length.

        A segment belongs to the member its *start* timestamp falls in, a gap (and the last ``START_SLACK_S`` of the
        member before it) counting with the member after it: Whisper's start timestamps sit near where speech
        starts, while its end timestamps drift late, often to the start of the next segment, across the gap (seen on
        dev-clean and train-clean-5). In a packed window a member whose text cannot be trusted gets instead the
        reason to decode it again alone (one of ``REDECODE``):

        * ``no timestamps``: the output has fewer than two timestamp tokens (nothing to split it by): every member;
        * ``unfinished``: the output ends on a timestamp pair, Whisper's "the rest goes to the next window" (the
          sequential mode seeks there), before the member's audio ends (by more than ``FINISH_TOLERANCE_S``);
        * ``late start``: no segment starts within ``LATE_S`` of the member's audio start, so its first words were
          run into the previous member's last segment (that member is decoded again too, when its last segment
          reaches into this one) or skipped;
        * ``no text``: no segment starts in it (Whisper skipped the clip).
        """
        frames = self.samples // HOP_LENGTH
        raw, _ = split_window(tokens, vocab, 0.0, frames, final=True)
        if not self.packed:
            return [raw]
        if sum(vocab.is_timestamp(t) for t in tokens) < 2:
            return ["no timestamps"] * len(self.members)
        spans = [(s / SAMPLE_RATE, (s + n) / SAMPLE_RATE) for s, n in zip(self.starts, self.lengths)]
        out: list[list[RawSegment] | str] = [[] for _ in self.members]
        firsts: list[float | None] = [None] * len(spans)  # where each member's first segment starts (window time)
        reach = [0.0] * len(spans)  # where its segments end, at the latest (window time, not clamped)
        for seg in raw:
            start = seg.start
            if seg.tokens and vocab.is_timestamp(seg.tokens[0]):  # a lone segment: split_window starts it at 0
                start = min((seg.tokens[0] - vocab.timestamp_begin) * TIME_PRECISION, seg.end)
            k = max([0] + [j for j in range(1, len(spans)) if start >= spans[j - 1][1] - START_SLACK_S])
            begin, end = spans[k]
            firsts[k] = start if firsts[k] is None else firsts[k]
            reach[k] = max(reach[k], seg.end)
            clamped = min(max(start - begin, 0.0), end - begin)
            out[k].append(replace(seg, start=clamped, end=max(clamped, min(seg.end - begin, end - begin))))
        reasons: list[str | None] = [None] * len(spans)
        unfinished = len(tokens) >= 2 and vocab.is_timestamp(tokens[-1]) and vocab.is_timestamp(tokens[-2])
        done_at = (tokens[-1] - vocab.timestamp_begin) * TIME_PRECISION if unfinished else float("inf")
        for k, (begin, end) in enumerate(spans):
            if end > done_at + FINISH_TOLERANCE_S:
                reasons[k] = "unfinished"
            elif firsts[k] is None:
                reasons[k] = "no text"
            elif firsts[k] > begin + LATE_S:
                reasons[k] = "late start"
                if k and reach[k - 1] > begin + LATE_S:
                    reasons[k - 1] = reasons[k - 1] or "late start"
        return [reason or piece for reason, piece in zip(reasons, out)]


def check_gap(gap_s: float) -> None:
    """A one-line error unless ``gap_s`` lies between Whisper's timestamp step and ``MAX_GAP_S``."""
    if not TIME_PRECISION <= gap_s <= MAX_GAP_S:
        raise WhisperoptError(f"--pack-gap must be between {TIME_PRECISION:g} and {MAX_GAP_S:g} seconds (Whisper's "
                              f"timestamp step and a third of a window), got {gap_s:g}")


def gap_samples(gap_s: float) -> int:
    """A gap in seconds as samples, on Whisper's 0.02-s timestamp grid (what a boundary can be located to)."""
    step = round(TIME_PRECISION * SAMPLE_RATE)
    return max(0, round(gap_s * SAMPLE_RATE / step)) * step


def plan_windows(lengths: list[int], gap: int, window: int = N_SAMPLES, tail: int | None = None) -> list[PackedWindow]:
    """Pack clips of ``lengths`` samples into windows of at most ``window`` samples: each clip takes its length plus
    ``gap`` (the silence after it), and ``tail`` samples at the window's end stay free (a margin besides the last
    clip's gap; None: ``TAIL_MARGIN_S``); first fit in input order, so a window's members keep their input order
    and no clip is split. A clip that does not fit in an empty window with its gap and the margin is a window of its
    own (decoded as it is, unpacked). Windows come in the order of their first member."""
    tail = round(TAIL_MARGIN_S * SAMPLE_RATE) if tail is None else tail
    if gap < 0 or tail < 0:
        raise ValueError(f"gap and tail must be >= 0 samples, got {gap} and {tail}")
    window -= tail
    windows: list[list] = []  # [used, members, starts, lengths, open]
    for i, n in enumerate(lengths):
        if n < 0:
            raise ValueError(f"clip {i} has a negative length")
        need = n + gap
        if need > window:
            windows.append([window, [i], [0], [n], False])
            continue
        for w in windows:
            if w[4] and w[0] + need <= window:
                w[1].append(i)
                w[2].append(w[0])
                w[3].append(n)
                w[0] += need
                break
        else:
            windows.append([need, [i], [0], [n], True])
    return [PackedWindow(tuple(m), tuple(s), tuple(n), gap) for _, m, s, n, _ in windows]
