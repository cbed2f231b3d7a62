"""The published Whisper architectures, by the names openai-whisper and the Hugging Face hub use."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import WhisperoptError


@dataclass(frozen=True)
class ModelDims:
    name: str
    d_model: int
    heads: int
    encoder_layers: int
    decoder_layers: int
    n_mels: int = 80
    num_languages: int = 99  # 100 for large-v3 (adds <|yue|>)
    english_only: bool = False
    hub_id: str = ""
    alignment_key: str = ""  # key of openai-whisper's _ALIGNMENT_HEADS

    @property
    def vocab_size(self) -> int:
        # tiktoken ranks (50257 multilingual / 50256 gpt2) + specials: eot, sot, languages, 6 task/control, 1501 timestamps
        base = 50256 if self.english_only else 50257
        return base + 1 + 1 + self.num_languages + 6 + 1501

    @property
    def ffn_dim(self) -> int:
        return 4 * self.d_model


_SIZES = [
    ModelDims("tiny", 384, 6, 4, 4, hub_id="openai/whisper-tiny", alignment_key="tiny"),
    ModelDims("tiny.en", 384, 6, 4, 4, english_only=True, hub_id="openai/whisper-tiny.en", alignment_key="tiny.en"),
    ModelDims("base", 512, 8, 6, 6, hub_id="openai/whisper-base", alignment_key="base"),
    ModelDims("base.en", 512, 8, 6, 6, english_only=True, hub_id="openai/whisper-base.en", alignment_key="base.en"),
    ModelDims("small", 768, 12, 12, 12, hub_id="openai/whisper-small", alignment_key="small"),
    ModelDims("small.en", 768, 12, 12, 12, english_only=True, hub_id="openai/whisper-small.en", alignment_key="small.en"),
    ModelDims("medium", 1024, 16, 24, 24, hub_id="openai/whisper-medium", alignment_key="medium"),
    ModelDims("medium.en", 1024, 16, 24, 24, english_only=True, hub_id="openai/whisper-medium.en", alignment_key="medium.en"),
    ModelDims("large-v2", 1280, 20, 32, 32, hub_id="openai/whisper-large-v2", alignment_key="large-v2"),
    ModelDims("large-v3", 1280, 20, 32, 32, n_mels=128, num_languages=100, hub_id="openai/whisper-large-v3", alignment_key="large-v3"),
    ModelDims("large-v3-turbo", 1280, 20, 32, 4, n_mels=128, num_languages=100, hub_id="openai/whisper-large-v3-turbo", alignment_key="large-v3-turbo"),
    ModelDims("distil-large-v3", 1280, 20, 32, 2, n_mels=128, num_languages=100, hub_id="distil-whisper/distil-large-v3"),
]

SIZES: dict[str, ModelDims] = {d.name: d for d in _SIZES}


def get_dims(name: str) -> ModelDims:
    try:
        return SIZES[name]
    except KeyError:
        raise WhisperoptError(f"unknown Whisper size {name!r}; known sizes: {', '.join(SIZES)}") from None
