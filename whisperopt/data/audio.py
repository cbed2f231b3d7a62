"""Decode audio to 16 kHz mono float32: soundfile for wav/flac at 16 kHz, PyAV for everything else."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np

from ..constants import SAMPLE_RATE
from ..errors import WhisperoptError, first_line
from ..files import os_reason

__all__ = ["SAMPLE_RATE", "audio_file_problem", "load_audio", "resampled"]


def audio_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an audio file — not found, a broken link, a symbolic link loop, a directory,
    permission denied, empty — or None if it opens (whether it decodes is the decoder's question)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"broken symbolic link (to {os.readlink(path)})" if os.path.islink(path) else "audio file not found"
        return os_reason(exc)
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not an audio file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return os_reason(exc)
    return "empty audio file" if st.st_size == 0 else None


def _ffmpeg_reason(exc: Exception) -> str:
    """PyAV's message without its "[Errno 1094995529]" and the repeated path."""
    return getattr(exc, "strerror", None) or first_line(exc, type(exc).__name__)


def _decode_soundfile(path: Path) -> np.ndarray | None:
    """Fast path for 16 kHz wav/flac; None when the file needs resampling or another decoder."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:
        return None
    if info.samplerate != SAMPLE_RATE:
        return None
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]


def resampled(frames):
    """16 kHz mono float32 frames from PyAV's decoded ``frames``. A fresh resampler whenever the input's sample rate,
    layout or sample format changes: an MP3 (a radio stream, joined files) may switch rate mid-file, and a resampler
    refuses a frame unlike its first ("Frame does not match AudioResampler setup")."""
    import av

    resampler, setup = None, None
    for frame in frames:
        now = (frame.sample_rate, frame.layout.name, frame.format.name)
        if now != setup:
            if resampler is not None:
                yield from resampler.resample(None)  # the samples it still holds at the old rate
            resampler, setup = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE), now
        yield from resampler.resample(frame)
    if resampler is not None:
        yield from resampler.resample(None)


def _decode_pyav(path: str) -> np.ndarray:
    import av

    try:
        container = av.open(path)
    except OSError as exc:  # e.g. av.error.PermissionError
        raise WhisperoptError(f"{path}: {os_reason(exc)}") from None
    except Exception as exc:
        raise WhisperoptError(f"cannot decode audio {path}: not an audio file ({_ffmpeg_reason(exc)})") from None
    try:
        if not container.streams.audio:
            raise WhisperoptError(f"no audio stream in {path}")
        stream = container.streams.audio[0]
        chunks: list[np.ndarray] = []
        try:
            for out in resampled(container.decode(stream)):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as exc:  # ValueError: a frame PyAV cannot convert
            raise WhisperoptError(f"corrupt or truncated audio {path}: {_ffmpeg_reason(exc)}") from None
    finally:
        container.close()
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, dtype=np.float32)


def load_audio(path: str | Path) -> np.ndarray:
    """Return the whole file as 16 kHz mono float32 in [-1, 1]. Raises WhisperoptError on unreadable input."""
    p = Path(path)
    problem = audio_file_problem(p)
    if problem:
        raise WhisperoptError(f"{path}: {problem}")
    audio = None
    if p.suffix.lower() in (".wav", ".flac"):
        try:
            audio = _decode_soundfile(p)
        except Exception:
            audio = None
    if audio is None:
        audio = _decode_pyav(str(p))
    if audio.size == 0:
        raise WhisperoptError(f"audio file has no samples: {path}")
    return np.ascontiguousarray(audio, dtype=np.float32)
