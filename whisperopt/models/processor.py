"""A checkpoint's Whisper processor (tokenizer and feature extractor) and the decoder prompt every engine forces.

Below every engine: the build check's probes, the bench worker's forced lengths and the engines that decode with
transformers' tokenizer all read the tokenizer from here.
"""

from __future__ import annotations

from pathlib import Path


def load_processor(model_dir: Path):
    """transformers' ``WhisperProcessor`` of a checkpoint directory (``.tokenizer``, ``.feature_extractor``)."""
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(str(model_dir))


def decoder_prompt(tokenizer, language: str | None, task: str, multilingual: bool) -> list[int]:
    """The forced decoder prefix: <|startoftranscript|>[<|lang|><|task|>]<|notimestamps|>."""
    if multilingual:
        tokenizer.set_prefix_tokens(language=language or "en", task=task, predict_timestamps=False)
    else:
        tokenizer.set_prefix_tokens(predict_timestamps=False)
    return list(tokenizer.prefix_tokens)
