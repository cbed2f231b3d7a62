"""Reference transcripts as token sequences: what a real run that outputs the reference decodes (the forced decode
length of synthetic checkpoints, the teacher-forcing sequence of the fidelity probes)."""

from __future__ import annotations


def reference_text(text: str) -> str:
    """A LibriSpeech-style reference as Whisper would write it (sentence case), for counting decode tokens."""
    text = " ".join(text.split())
    return text[:1].upper() + text[1:].lower() if text.isupper() else text


def reference_tokens(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(" " + reference_text(text), add_special_tokens=False)


def forced_length(tokenizer, text: str) -> int:
    """Decode steps of a real run that outputs the reference: its text tokens plus the end-of-text step."""
    return len(reference_tokens(tokenizer, text)) + 1
