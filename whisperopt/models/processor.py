"""A checkpoint's Whisper processor (tokenizer and feature extractor) and the decoder prompt every engine forces.

Below every engine: the build check's probes, the bench worker's forced lengths and the engines that decode with
transformers' tokenizer all read the tokenizer from here.

The two parts are loaded with their own transformers classes, not through ``WhisperProcessor``: transformers'
``ProcessorMixin`` imports its modelling code (``modeling_utils``, and with it torchao, scikit-learn and dynamo), about
3 s of CPU in every worker process of an engine that never runs transformers' model. ``WhisperProcessor`` itself
loads the same two classes from the same files (the fast tokenizer when ``tokenizer.json`` is there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Processor:
    """A checkpoint's tokenizer (``WhisperTokenizerFast``) and log-mel feature extractor (``WhisperFeatureExtractor``)."""

    tokenizer: object
    feature_extractor: object


def load_tokenizer(model_dir: Path):
    """transformers' ``WhisperTokenizerFast`` of a checkpoint directory."""
    from transformers import WhisperTokenizerFast

    return WhisperTokenizerFast.from_pretrained(str(model_dir))


def load_processor(model_dir: Path) -> Processor:
    """The tokenizer and the feature extractor of a checkpoint directory (``.tokenizer``, ``.feature_extractor``)."""
    from ..data.features import load_feature_extractor

    return Processor(load_tokenizer(model_dir), load_feature_extractor(model_dir))


def decoder_prompt(tokenizer, language: str | None, task: str, multilingual: bool) -> list[int]:
    """The forced decoder prefix: <|startoftranscript|>[<|lang|><|task|>]<|notimestamps|>."""
    if multilingual:
        tokenizer.set_prefix_tokens(language=language or "en", task=task, predict_timestamps=False)
    else:
        tokenizer.set_prefix_tokens(predict_timestamps=False)
    return list(tokenizer.prefix_tokens)
