"""A Runtime around any model with transformers' Whisper ``generate`` (PyTorch, and Optimum's ORT/OpenVINO models).

Engines whose model class is a drop-in for ``WhisperForConditionalGeneration`` reuse this; other engines
(CTranslate2, sherpa-onnx) implement ``Runtime`` themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.audio import SAMPLE_RATE
from .base import DecodeOptions, Runtime, Transcription

MAX_TARGET_POSITIONS = 448


def load_processor(model_dir: Path):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(str(model_dir))


def decoder_prompt(tokenizer, language: str | None, task: str, multilingual: bool) -> list[int]:
    """The forced decoder prefix: <|startoftranscript|>[<|lang|><|task|>]<|notimestamps|>."""
    if multilingual:
        tokenizer.set_prefix_tokens(language=language or "en", task=task, predict_timestamps=False)
    else:
        tokenizer.set_prefix_tokens(predict_timestamps=False)
    return list(tokenizer.prefix_tokens)


class GenerateRuntime(Runtime):
    """Runs ``model.generate`` with Whisper's decoding options; ``model`` is a transformers-compatible Whisper."""

    def __init__(self, model, model_dir: Path, device: str = "cpu", dtype=None):
        self.model = model
        self.processor = load_processor(model_dir)
        self.tokenizer = self.processor.tokenizer
        self.device = device
        self.dtype = dtype
        self.multilingual = bool(getattr(model.generation_config, "is_multilingual", True))

    def features(self, audios: list[np.ndarray]):
        feats = self.processor.feature_extractor(
            audios, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features
        if self.dtype is not None:
            feats = feats.to(self.device, dtype=self.dtype)
        return feats

    def generate_kwargs(self, options: DecodeOptions, forced_lengths: list[int] | None) -> dict:
        kwargs = {"num_beams": options.beam_size, "do_sample": False, "return_timestamps": False}
        if self.multilingual:
            kwargs.update(language=options.language, task=options.task)
        prompt = 4 if self.multilingual else 2
        limit = MAX_TARGET_POSITIONS - prompt
        if forced_lengths:
            n = min(max(forced_lengths), limit)
            kwargs.update(max_new_tokens=n, min_new_tokens=n)
            # random weights emit timestamp tokens despite <|notimestamps|> (a trained model does not); generate would
            # then split and re-seek segments, so the work would no longer be the n text tokens of a real run
            kwargs["suppress_tokens"] = self.timestamp_suppression()
        else:
            kwargs["max_new_tokens"] = min(options.max_new_tokens or limit, limit)
        return kwargs

    def timestamp_suppression(self) -> list[int]:
        """The checkpoint's suppress_tokens plus every timestamp token (<|0.00|> ... <|30.00|>)."""
        gen = self.model.generation_config
        begin = gen.no_timestamps_token_id + 1
        vocab = self.model.config.vocab_size
        return sorted(set(gen.suppress_tokens or []) | set(range(begin, vocab)))

    def transcribe(self, audios, options, forced_lengths=None):
        import torch

        feats = self.features(audios)
        with torch.inference_mode():
            out = self.model.generate(feats, **self.generate_kwargs(options, forced_lengths))
        sequences = out.sequences if hasattr(out, "sequences") else out
        special = set(self.tokenizer.all_special_ids)
        results = []
        for seq in sequences.tolist():
            tokens = [t for t in seq if t not in special]
            results.append(Transcription(self.tokenizer.decode(tokens, skip_special_tokens=True).strip(), tokens))
        return results
