"""The one log-mel front end every engine that accepts features is fed (the bench's fairness rule).

Whisper's reference front end (openai-whisper ``log_mel_spectrogram(pad_or_trim(audio))``, and transformers'
``WhisperFeatureExtractor``) zero-pads the *audio* to 30 s and then takes the log-mel, so the frames after the speech
hold the log-mel of silence (clamped at the window's max - 8, i.e. about -1 after scaling). faster-whisper instead
takes the log-mel of the audio alone and pads the *features* with zeros. Same model, different input: on tiny.en
that alone changed 27 of 100 test-clean transcripts and WER by 0.3 points. So every engine whose API takes features
(transformers, Optimum ONNX/OpenVINO, CTranslate2 through faster-whisper) gets ``log_mel`` below; engines that only
take audio (openvino-genai's and sherpa-onnx's C++ front ends) use their own, and their rows say so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..constants import CHUNK_LENGTH, FRAMES_PER_SECOND, N_FRAMES, WINDOW_AUTO_FLOOR_S, WINDOW_FULL, WINDOW_MARGIN_S
from ..errors import WhisperoptError
from .audio import SAMPLE_RATE

FRONT_END = "Whisper reference log-mel (audio zero-padded to 30 s, then log-mel; transformers WhisperFeatureExtractor)"


def load_feature_extractor(model_dir: Path):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor.from_pretrained(str(model_dir))


def log_mel(extractor, audios: list[np.ndarray], frames: int = N_FRAMES) -> np.ndarray:
    """(batch, n_mels, frames) float32 features of ≤ 30-s 16 kHz mono arrays (longer ones are cut at 30 s).

    ``frames`` < 3000 (an adaptive window, ``window_frames``): the same reference log-mel, cut after ``frames``
    frames, so the frames kept are bit-identical to the full window's (the clip, then the log-mel of silence)."""
    feats = extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
    return np.ascontiguousarray(feats[..., :frames], dtype=np.float32)


def window_floor_s(window: str) -> int:
    """The shortest window the ``window`` option encodes, in seconds: 'auto' is the dev-clean-chosen floor, 'N' is N
    (1-30); '30' is the full window. Anything else is a one-line error."""
    if window == "auto":
        return WINDOW_AUTO_FLOOR_S
    try:
        seconds = int(window)
    except (TypeError, ValueError):
        seconds = 0
    if not 1 <= seconds <= CHUNK_LENGTH or str(window) != str(seconds):
        raise WhisperoptError(f"window must be auto or whole seconds 1-{CHUNK_LENGTH} (the shortest window encoded; "
                              f"{WINDOW_FULL}: always the full window), got {window!r}")
    return seconds


def check_window(window) -> str | None:
    """``Option.check`` for ``window``: why the value is wrong, or None."""
    try:
        window_floor_s(str(window))
    except WhisperoptError:
        return (f"expected auto or whole seconds 1-{CHUNK_LENGTH} (the shortest window encoded; {WINDOW_FULL}: always "
                "the full window)")
    return None


def window_frames(durations_s: list[float], window: str = WINDOW_FULL) -> int:
    """Log-mel frames the encoder is given for a batch of clips: max(longest clip + margin, floor), rounded up to
    whole seconds, at most the full 3000 (a clip that long, or longer, gets the full window: never truncated)."""
    floor = window_floor_s(window)
    if floor >= CHUNK_LENGTH:
        return N_FRAMES
    longest = max(durations_s, default=0.0)
    seconds = max(math.ceil(longest + WINDOW_MARGIN_S), floor)
    return min(seconds, CHUNK_LENGTH) * FRAMES_PER_SECOND


def audio_frames(audios: list[np.ndarray], window: str = WINDOW_FULL) -> int:
    """``window_frames`` of 16 kHz arrays."""
    return window_frames([len(a) / SAMPLE_RATE for a in audios], window)
