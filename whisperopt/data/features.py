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

from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE

FRONT_END = "Whisper reference log-mel (audio zero-padded to 30 s, then log-mel; transformers WhisperFeatureExtractor)"


def load_feature_extractor(model_dir: Path):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor.from_pretrained(str(model_dir))


def log_mel(extractor, audios: list[np.ndarray]) -> np.ndarray:
    """(batch, n_mels, 3000) float32 features of ≤ 30-s 16 kHz mono arrays (longer ones are cut at 30 s)."""
    feats = extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
    return np.ascontiguousarray(feats, dtype=np.float32)
