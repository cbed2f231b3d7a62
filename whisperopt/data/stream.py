"""Stream any audio PyAV can decode as 16 kHz mono float32 blocks, so hours of audio never sit in memory at once."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import WhisperoptError
from .audio import SAMPLE_RATE, _ffmpeg_reason, audio_file_problem, resampled


def _open(source: str | Path):
    import av

    if str(source) == "-":
        return av.open(sys.stdin.buffer, mode="r")
    problem = audio_file_problem(source)
    if problem:
        raise WhisperoptError(f"{source}: {problem}")
    return av.open(str(source), mode="r")


def stream_audio(source: str | Path, block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of ``block_seconds`` (the last one shorter) of 16 kHz mono float32 audio.

    ``source`` is a path or ``-`` for standard input. Stereo is downmixed, any rate resampled. Raises
    WhisperoptError for missing, non-audio, corrupt or truncated input.
    """
    import av

    name = "<stdin>" if str(source) == "-" else str(source)
    try:
        container = _open(source)
    except WhisperoptError:
        raise
    except Exception as exc:
        raise WhisperoptError(f"cannot decode audio {name}: not an audio file or unsupported format "
                              f"({type(exc).__name__})") from None
    block = int(block_seconds * SAMPLE_RATE)
    pending: list[np.ndarray] = []
    pending_len = 0
    try:
        if not container.streams.audio:
            raise WhisperoptError(f"no audio stream in {name}")
        stream = container.streams.audio[0]

        def frames():
            try:
                yield from resampled(container.decode(stream))
            except (av.error.FFmpegError, ValueError) as exc:  # ValueError: a frame PyAV cannot convert
                raise WhisperoptError(f"corrupt or truncated audio {name}: {_ffmpeg_reason(exc)}") from None

        for out in frames():
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            pending.append(samples)
            pending_len += len(samples)
            while pending_len >= block:
                joined = np.concatenate(pending)
                yield joined[:block]
                rest = joined[block:]
                pending, pending_len = ([rest] if len(rest) else []), len(rest)
        if pending_len:
            yield np.concatenate(pending)
    finally:
        container.close()
