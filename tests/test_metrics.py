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


def _counts(n: int, p: float = 0.1, seed: int = 0) -> list:
    """n utterances of 10-30 reference words, each word wrong with probability p."""
    from whisperopt.metrics import ErrorCounts

    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 31, n)
    errors = rng.binomial(lengths, p)
    return [ErrorCounts(int(e), 0, 0, int(n_words - e)) for e, n_words in zip(errors, lengths)]


def test_bootstrap_ci_contains_the_corpus_rate_and_narrows_with_more_utterances():
    from whisperopt.metrics import rate_ci

    small, large = _counts(30), _counts(3000)
    for counts in (small, large):
        lo, hi = rate_ci(counts)
        assert lo < corpus_rate(counts) < hi
        assert 0 <= lo and hi <= 1  # a fraction, like corpus_rate
    (lo_small, hi_small), (lo_large, hi_large) = rate_ci(small), rate_ci(large)
    assert hi_large - lo_large < (hi_small - lo_small) / 5  # ~ 1/sqrt(n): 10x narrower for 100x the utterances
    assert rate_ci(small) == rate_ci(small)  # seeded: the same counts give the same interval
    assert rate_ci(small, seed=1) != rate_ci(small)


def test_bootstrap_resamples_utterances_not_words():
    """One utterance holding every error: the interval must reach 0 (resamples that miss it), which a word-level
    bootstrap of the same 2 % would not."""
    from whisperopt.metrics import ErrorCounts, rate_ci

    counts = [ErrorCounts(10, 0, 0, 10)] + [ErrorCounts(0, 0, 0, 20) for _ in range(24)]
    lo, hi = rate_ci(counts)
    assert lo == 0.0 and hi > 2 * corpus_rate(counts)


def test_paired_delta_of_identical_and_of_worse_recipes():
    from whisperopt.metrics import ErrorCounts, paired_delta_ci

    base = _counts(200)
    same = paired_delta_ci(base, list(base))
    assert same == {"delta": 0.0, "lo": 0.0, "hi": 0.0, "significant": False}
    worse = [ErrorCounts(c.substitutions, c.deletions, c.insertions + 1, c.hits) for c in base]  # +1 error each
    d = paired_delta_ci(base, worse)
    assert d["delta"] == pytest.approx(corpus_rate(worse) - corpus_rate(base)) and d["delta"] > 0
    assert d["significant"] and 0 < d["lo"] <= d["delta"] <= d["hi"]
    # pairing: the same utterances in both sides, so the shared difficulty cancels and the delta's interval is
    # far narrower than either rate's own
    from whisperopt.metrics import rate_ci

    assert d["hi"] - d["lo"] < (rate_ci(worse)[1] - rate_ci(worse)[0]) / 2
    with pytest.raises(ValueError):
        paired_delta_ci(base, worse[:-1])
