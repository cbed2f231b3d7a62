"""WER/CER after the Whisper normaliser, corpus aggregation, fidelity measures."""

from __future__ import annotations

import numpy as np
import pytest

from whisperopt.metrics import corpus_rate, normalise, relative_l2, top1_agreement, utterance_errors


def test_whisper_normaliser_is_used():
    assert normalise("Mr. Smith's colour is GREY, isn't it?") == normalise("mister smith's color is gray is not it")
    assert normalise("HE HOPED THERE WOULD BE STEW") == "he hoped there would be stew"


def test_utterance_and_corpus_wer():
    w1, c1 = utterance_errors("HE HOPED THERE WOULD BE STEW", "He hoped there would be stew.")
    assert (w1.substitutions, w1.deletions, w1.insertions, w1.hits) == (0, 0, 0, 6) and c1.errors == 0
    w2, _ = utterance_errors("the cat sat on the mat", "the cat sat on a mat mat")
    assert (w2.substitutions, w2.deletions, w2.insertions) == (1, 0, 1)
    w3, _ = utterance_errors("alpha beta gamma delta", "alpha gamma delta")
    assert w3.deletions == 1
    # corpus WER = total errors / total reference words, not the mean of utterance rates
    assert corpus_rate([w1, w2, w3]) == pytest.approx(3 / 16)
    assert corpus_rate([w2, w3]) != pytest.approx(np.mean([2 / 6, 1 / 4]))
    w4, c4 = utterance_errors("hello world", "")
    assert w4.deletions == 2 and c4.deletions == len("hello world")


def test_fidelity_measures():
    a = np.ones((10, 4), dtype=np.float32)
    assert relative_l2(a, a) == 0.0
    assert relative_l2(a, a * 1.01) == pytest.approx(0.01, rel=1e-4)
    assert top1_agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == (3, 4)
    with pytest.raises(ValueError):
        relative_l2(a, a[:5])


def test_peak_rss_of_a_worker_is_its_own_not_its_parents():
    """A worker started by a large parent (pytest holding models) must not inherit the parent's peak RSS."""
    import subprocess
    import sys

    import numpy as np

    from whisperopt.metrics.resources import peak_rss_mb

    ballast = np.ones(600 * 1024 * 1024 // 8)  # 600 MiB resident in this (parent) process
    assert peak_rss_mb() > 600
    out = subprocess.run([sys.executable, "-c", "from whisperopt.metrics.resources import peak_rss_mb; "
                          "print(peak_rss_mb())"], check=True, capture_output=True, text=True).stdout
    assert float(out) < 300, out
    del ballast
