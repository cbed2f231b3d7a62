"""Where long-form audio comes from: a path, ``-`` (stdin), an array or an iterable of 16 kHz blocks, read as
blocks (``audio_blocks``) into a sliding window (``WindowBuffer``) that holds only what is still to be decoded, and
its stated duration before decoding (``stated_duration``, ``probe_duration``: for progress bars)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..constants import N_SAMPLES, SAMPLE_RATE


class WindowBuffer:
    """A sliding view over a stream of 16 kHz blocks: holds only the samples from the current window on."""

    def __init__(self, blocks: Iterable[np.ndarray]):
        self._blocks = iter(blocks)
        self._data = np.zeros(0, dtype=np.float32)
        self._start = 0  # absolute index of _data[0]
        self.exhausted = False
        self.total = 0  # samples read so far

    def window(self, offset: int, length: int) -> np.ndarray:
        if offset > self._start:
            self._data = self._data[offset - self._start:]
            self._start = offset
        while not self.exhausted and len(self._data) < (offset - self._start) + length:
            block = next(self._blocks, None)
            if block is None:
                self.exhausted = True
                break
            self.total += len(block)
            self._data = np.concatenate([self._data, np.asarray(block, dtype=np.float32).reshape(-1)])
        begin = max(0, offset - self._start)
        return self._data[begin:begin + length]


def audio_blocks(audio) -> tuple[Iterable[np.ndarray], str]:
    """(16 kHz float32 blocks, display name) for a path, ``-`` (stdin), an array or an iterable of arrays."""
    from ..data.stream import stream_audio

    if isinstance(audio, (str, Path)):
        name = "<stdin>" if str(audio) == "-" else str(audio)
        return stream_audio(audio, block_seconds=N_SAMPLES / SAMPLE_RATE), name
    if isinstance(audio, np.ndarray):
        flat = np.asarray(audio, dtype=np.float32).reshape(-1)
        return (flat[i:i + N_SAMPLES] for i in range(0, len(flat), N_SAMPLES)), "<array>"
    return audio, "<stream>"


def stated_duration(audio) -> float | None:
    """Seconds of audio before decoding it: an array's length, a file's container header; None for streams."""
    if isinstance(audio, np.ndarray):
        return np.asarray(audio).size / SAMPLE_RATE
    return probe_duration(audio) if isinstance(audio, (str, Path)) else None


def probe_duration(source) -> float | None:
    """The container's stated duration in seconds (for progress bars), or None (stdin, unknown, unreadable)."""
    if str(source) == "-" or not Path(source).is_file():
        return None
    try:
        import av

        with av.open(str(source)) as container:
            if container.duration:
                return container.duration / 1_000_000
            stream = container.streams.audio[0]
            return float(stream.duration * stream.time_base) if stream.duration else None
    except Exception:
        return None
