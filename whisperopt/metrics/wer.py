"""WER and CER with jiwer after openai-whisper's English text normaliser (the one the Whisper paper used)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache


@lru_cache(maxsize=1)
def _normaliser():
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalise(text: str) -> str:
    return _normaliser()(text)


@dataclass
class ErrorCounts:
    """Edit-operation counts of one utterance (words or characters)."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def reference_length(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def to_dict(self) -> dict:
        return asdict(self)


def _counts(output) -> ErrorCounts:
    return ErrorCounts(output.substitutions, output.deletions, output.insertions, output.hits)


def utterance_errors(reference: str, hypothesis: str) -> tuple[ErrorCounts, ErrorCounts]:
    """(word counts, character counts) after normalisation. An empty normalised reference counts as zero words."""
    import jiwer

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref.strip():
        n_hyp_words = len(hyp.split())
        return ErrorCounts(0, 0, n_hyp_words, 0), ErrorCounts(0, 0, len(hyp), 0)
    if not hyp.strip():
        return ErrorCounts(0, len(ref.split()), 0, 0), ErrorCounts(0, len(ref), 0, 0)
    return _counts(jiwer.process_words(ref, hyp)), _counts(jiwer.process_characters(ref, hyp))


def corpus_rate(counts: list[ErrorCounts]) -> float | None:
    """Corpus error rate: total errors / total reference units (not the mean of per-utterance rates)."""
    ref = sum(c.reference_length for c in counts)
    if ref == 0:
        return None
    return sum(c.errors for c in counts) / ref
