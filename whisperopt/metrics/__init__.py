"""Metrics: WER/CER after Whisper's normaliser, bootstrap intervals, resources, fidelity against the fp32 reference."""

from .bootstrap import paired_delta_ci, rate_ci
from .fidelity import relative_l2, top1_agreement
from .wer import ErrorCounts, corpus_rate, normalise, utterance_errors

__all__ = ["relative_l2", "top1_agreement", "ErrorCounts", "corpus_rate", "normalise", "utterance_errors",
           "rate_ci", "paired_delta_ci"]
