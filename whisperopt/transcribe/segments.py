"""From a window's decoded tokens to timed segments: timestamp-token pairs, seeking, compression ratio.

Follows openai-whisper's transcribe.py: a window's tokens are cut at each pair of consecutive timestamp tokens
(``<|t0|> text <|t1|><|t1|> text <|t2|>``); a window that ends on a single timestamp is complete, otherwise the next
window starts at the last timestamp, so the unfinished sentence is decoded again with its full context.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..constants import HOP_LENGTH, SAMPLE_RATE
from ..models.vocabulary import Vocabulary, resolve_language  # noqa: F401 - the transcribe layer's names

INPUT_STRIDE = 2  # log-mel frames per encoder position, i.e. per timestamp step
TIME_PRECISION = 0.02  # seconds per timestamp token


def compression_ratio(text: str) -> float:
    """len(text) / len(zlib(text)): repetitive (looping) output compresses well and scores high."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass
class RawSegment:
    start: float  # seconds, absolute
    end: float
    tokens: list[int]  # with their timestamp tokens
    index: int = 0  # where ``tokens`` starts in the window's tokens


def single_timestamp_ending(tokens: list[int], vocab: Vocabulary) -> bool:
    """Does a window's output end on one timestamp after text (the model heard the rest of the window as silence)?"""
    return len(tokens) >= 2 and not vocab.is_timestamp(tokens[-2]) and vocab.is_timestamp(tokens[-1])


def split_window(tokens: list[int], vocab: Vocabulary, time_offset: float, window_frames: int,
                 final: bool = False) -> tuple[list[RawSegment], int]:
    """Cut one window's tokens into segments; return them and how many frames the next window starts later.

    ``window_frames`` is the window's length in log-mel frames (≤ 3000). With ``final`` (chunked mode: no next
    window re-decodes the tail) tokens after the last timestamp pair become a segment ending at the window's end.
    Times are clamped to the window (random or confused weights emit timestamps past the audio).
    """
    window_end = time_offset + window_frames * HOP_LENGTH / SAMPLE_RATE

    def at(token: int) -> float:
        return min(max(time_offset + (token - vocab.timestamp_begin) * TIME_PRECISION, time_offset), window_end)

    is_ts = [vocab.is_timestamp(t) for t in tokens]
    single_ending = single_timestamp_ending(tokens, vocab)
    cuts = [i for i in range(1, len(tokens)) if is_ts[i] and is_ts[i - 1]]
    segments: list[RawSegment] = []
    if cuts:
        ends = cuts + [len(tokens)] if single_ending else cuts
        last = 0
        for cut in ends:
            piece = tokens[last:cut]
            if vocab.text_tokens(piece):
                start = at(piece[0]) if vocab.is_timestamp(piece[0]) else (
                    segments[-1].end if segments else time_offset)
                end = at(piece[-1]) if vocab.is_timestamp(piece[-1]) else window_end
                segments.append(RawSegment(start, max(start, end), piece, last))
            last = cut
        if single_ending:
            advance = window_frames
        else:
            advance = (tokens[last - 1] - vocab.timestamp_begin) * INPUT_STRIDE
            tail = tokens[last:]
            if final and vocab.text_tokens(tail):
                segments.append(RawSegment(at(tail[0]), window_end, tail, last))
                advance = window_frames
    else:
        stamps = [t for t, ts in zip(tokens, is_ts) if ts]
        end = window_end
        if stamps and stamps[-1] != vocab.timestamp_begin:
            end = at(stamps[-1])
        if vocab.text_tokens(tokens):
            segments.append(RawSegment(time_offset, end, list(tokens)))
        advance = window_frames
    if advance <= 0 or advance > window_frames:  # never stall, never skip audio that was not decoded
        advance = window_frames
    return segments, advance


def group_words(pieces: list[str | None], times: list[float], start: float, end: float,
                probs: list[float] | None = None) -> list[dict]:
    """Words of one segment from its tokens' texts (None for timestamp tokens) and absolute start times (one more
    entry than ``pieces``: where the last token ends). A word starts at a piece beginning with a space or after a
    timestamp and lasts until its last token ends; times are clamped to the segment. ``probs`` (one per piece): a
    word's ``probability`` is its tokens' mean, as in openai-whisper."""
    spans: list[list] = []  # [first index, last index, text]
    for i, piece in enumerate(pieces):
        if piece is None:
            continue
        if not spans or piece.startswith(" ") or pieces[i - 1] is None:
            spans.append([i, i, piece])
        else:
            spans[-1][1] = i
            spans[-1][2] += piece
    words = []
    for first, last, text in spans:
        a = min(max(times[first], start), end)
        b = min(max(times[last + 1], a), end)
        word = {"start": round(a, 3), "end": round(b, 3), "word": text}
        if probs is not None:
            mine = probs[first:last + 1]
            word["probability"] = round(sum(mine) / len(mine), 4)
        words.append(word)
    return words
