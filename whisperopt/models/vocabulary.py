"""The special tokens and languages of a Whisper checkpoint, read from its directory (for bench and transcribe)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import WhisperoptError


@dataclass(frozen=True)
class Vocabulary:
    """The special tokens long-form decoding needs, read from a Hugging Face Whisper checkpoint directory."""

    eot: int
    sot: int
    sot_prev: int
    no_timestamps: int
    timestamp_begin: int
    languages: tuple[str, ...]  # codes the checkpoint knows, in token order; ("en",) for English-only models
    multilingual: bool

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> Vocabulary:
        gen = json.loads((Path(model_dir) / "generation_config.json").read_text())
        lang_to_id = gen.get("lang_to_id") or {}
        multilingual = bool(gen.get("is_multilingual", bool(lang_to_id)))
        languages = tuple(tok[2:-2] for tok, _ in sorted(lang_to_id.items(), key=lambda kv: kv[1])) or ("en",)
        no_ts = gen["no_timestamps_token_id"]
        return cls(eot=gen["eos_token_id"], sot=gen["decoder_start_token_id"], sot_prev=gen["prev_sot_token_id"],
                   no_timestamps=no_ts, timestamp_begin=no_ts + 1, languages=languages if multilingual else ("en",),
                   multilingual=multilingual)

    def is_timestamp(self, token: int) -> bool:
        return token >= self.timestamp_begin

    def text_tokens(self, tokens: list[int]) -> list[int]:
        return [t for t in tokens if t < self.eot]


def resolve_language(language: str | None, vocab: Vocabulary) -> str | None:
    """A language code the checkpoint knows (full names like "german" accepted); None/"auto" means detect."""
    if language is None or language.strip().lower() in ("", "auto"):
        return None
    code = language.strip().lower()
    if code not in vocab.languages:  # a full name: openai-whisper's table (its package import loads torch)
        try:
            from whisper.tokenizer import TO_LANGUAGE_CODE

            code = TO_LANGUAGE_CODE.get(code, code)
        except ImportError:  # pragma: no cover - openai-whisper is a dependency
            pass
    if code not in vocab.languages:
        if not vocab.multilingual:
            raise WhisperoptError(f"this checkpoint is English-only; it cannot transcribe language {language!r}")
        raise WhisperoptError(f"unknown language code {language!r}; this checkpoint knows: {', '.join(vocab.languages)}")
    return code
