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


def _tiny_config(tiny_model) -> dict:
    import json

    return json.loads((tiny_model.path / "config.json").read_text())


def test_whisper_cost_matches_the_model(tiny_model):
    """Parameters against the checkpoint's tensors; encoder-pass and decoder-step FLOPs against torch's own FLOP
    counter on the real model (eager attention, which the counter sees as matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import WhisperForConditionalGeneration

    from whisperopt.metrics.roofline import whisper_cost
    from whisperopt.report.summary import fp32_bytes

    cost = whisper_cost(_tiny_config(tiny_model), context=4)
    assert cost.params == pytest.approx(fp32_bytes(tiny_model.path) / 4, rel=0.005)  # biases and norms left out
    model = WhisperForConditionalGeneration.from_pretrained(str(tiny_model.path), attn_implementation="eager").eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        encoded = model.model.encoder(torch.zeros(1, 80, 3000)).last_hidden_state
    assert counter.get_total_flops() == pytest.approx(cost.encoder_flops, rel=0.01)
    prompt = torch.tensor([[model.generation_config.decoder_start_token_id] * 4])
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        past = model(encoder_outputs=(encoded,), decoder_input_ids=prompt, use_cache=True).past_key_values
    assert counter.get_total_flops() == pytest.approx(cost.cross_kv_flops + 4 * cost.token_flops, rel=0.02)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(encoder_outputs=(encoded,), decoder_input_ids=prompt[:, :1], past_key_values=past, use_cache=True)
    assert counter.get_total_flops() == pytest.approx(cost.token_flops, rel=0.02)


def test_fixed_and_per_token_fit_and_roofline(tiny_model):
    from whisperopt.metrics.roofline import fit_fixed_per_token, roofline, whisper_cost

    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 80, size=40)
    rows = [{"tokens": int(t), "latency_s": 0.3 + 0.01 * t + rng.normal(0, 0.002), "batch": 1} for t in tokens]
    fixed, per_token = fit_fixed_per_token(rows)
    assert fixed == pytest.approx(0.3, abs=0.01) and per_token == pytest.approx(0.01, rel=0.02)
    # two utterances stalled by something else on the cores (a short one 2 s late): the line stays where it was
    stalled = [dict(r, latency_s=r["latency_s"] + 2.0) if i in (0, 1) else r for i, r in enumerate(
        sorted(rows, key=lambda r: r["tokens"]))]
    assert fit_fixed_per_token(stalled) == pytest.approx((fixed, per_token), rel=0.05)
    assert fit_fixed_per_token(rows[:4]) is None  # too few rows to split
    assert fit_fixed_per_token([dict(r, tokens=10) for r in rows]) is None  # one length: no slope
    assert fit_fixed_per_token([dict(r, batch=4) for r in rows]) is None  # batched rows share their wall time
    cost = whisper_cost(_tiny_config(tiny_model))
    peaks = {"threads": 2, "fp32_gflops": 100.0, "int8_gops": 200.0, "copy_gb_s": 20.0}
    fp32, int8 = roofline(rows, cost, peaks, 32), roofline(rows, cost, peaks, 8)
    work = cost.encoder_flops + cost.cross_kv_flops
    assert fp32["fixed_share_fp32"] == pytest.approx(work / fixed / 100e9)
    assert fp32["fixed_share_int8"] == pytest.approx(fp32["fixed_share_fp32"] / 2)
    assert fp32["decoder_gb_s"] == pytest.approx(4 * int8["decoder_gb_s"])
    assert fp32["decoder_gb_s"] == pytest.approx(cost.token_weight_params * 4 / per_token / 1e9)
    assert fp32["full_window"] and fp32["headroom"] > 1
    # a fixed part faster than one 30-s encoder pass at the best peak: the engine encodes less than a window
    short = [dict(r, latency_s=r["latency_s"] - 0.29) for r in rows]
    assert roofline(short, cost, peaks, 32)["full_window"] is False


def test_peak_probe_measures_this_machine():
    from whisperopt.metrics.roofline import probe_peaks

    peaks = probe_peaks(1)
    assert peaks["threads"] == 1
    # one core does at least a few GFLOP/s and copies at least 1 GB/s; no CPU core does 1 TFLOP/s of fp32
    assert 2 < peaks["fp32_gflops"] < 1000 and peaks["copy_gb_s"] > 1
    assert peaks["int8_gops"] is None or peaks["int8_gops"] > 2
    # bf16 is measured even without a bf16 unit (converted in software: slow, and that is the honest figure)
    assert peaks["bf16_gflops"] is None or peaks["bf16_gflops"] > 0.1
    assert set(peaks["backends"]) == {"fp32", "bf16", "int8"}
    assert peaks["int8_gops"] is None or any(b in peaks["backends"]["int8"] for b in ("fbgemm", "onednn"))


# --- ISA paths (metrics/isa.py): classified from fake /proc/cpuinfo flags, the way each CPU reports them ------------

SPR = "fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_int8 " \
      "amx_bf16 avx_vnni"
ICELAKE = "fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni"
ZEN4 = "fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16"
ALDER = "fpu sse4_2 avx avx2 fma f16c avx_vnni"
ZEN2 = "fpu sse4_2 avx avx2 fma f16c"
SKYLAKE_X = "fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl"
GRAVITON3 = "fp asimd asimdhp asimddp sve i8mm bf16"


@pytest.mark.parametrize("flags,machine,paths", [
    (SPR, "x86_64", {"fp32": "avx512f", "bf16": "amx_bf16", "fp16": "avx512_fp16", "int8": "amx_int8"}),
    (ICELAKE, "x86_64", {"fp32": "avx512f", "bf16": "avx512f (no bf16 unit)", "fp16": "avx512f (no fp16 unit)",
                         "int8": "avx512_vnni"}),
    (ZEN4, "x86_64", {"fp32": "avx512f", "bf16": "avx512_bf16", "fp16": "avx512f (no fp16 unit)",
                      "int8": "avx512_vnni"}),
    (ALDER, "x86_64", {"fp32": "avx2", "bf16": "avx2 (no bf16 unit)", "fp16": "avx2 (no fp16 unit)",
                       "int8": "avx_vnni"}),
    (ZEN2, "x86_64", {"fp32": "avx2", "bf16": "avx2 (no bf16 unit)", "fp16": "avx2 (no fp16 unit)", "int8": "avx2"}),
    (SKYLAKE_X, "x86_64", {"fp32": "avx512f", "bf16": "avx512f (no bf16 unit)", "fp16": "avx512f (no fp16 unit)",
                           "int8": "avx512bw"}),
    (GRAVITON3, "aarch64", {"fp32": "sve", "bf16": "bf16", "fp16": "asimdhp", "int8": "i8mm"}),
    (GRAVITON3, None, {"fp32": "sve", "bf16": "bf16", "fp16": "asimdhp", "int8": "i8mm"}),  # ARM told by its flags
    ("fpu", "x86_64", {"fp32": "generic", "bf16": "generic (no bf16 unit)", "fp16": "generic (no fp16 unit)",
                       "int8": "generic"}),
])
def test_fastest_path_per_precision_from_cpu_flags(flags, machine, paths):
    from whisperopt.metrics.isa import best_paths, parse_cpuinfo

    text = f"processor\t: 0\nmodel name\t: test cpu\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    info = parse_cpuinfo(text)
    assert info["model"] == "test cpu" and info["flags"] == set(flags.split())  # the first processor's line
    assert best_paths(info["flags"], machine) == paths


def test_kernel_path_names_the_path_a_library_can_take():
    from whisperopt.metrics.isa import best_isa, kernel_path, path_text

    spr = set(SPR.split())
    assert best_isa("int8", spr, "x86_64", amx=False) == "avx512_vnni"  # fbgemm has no AMX kernels
    assert best_isa("bf16", spr, "x86_64", amx=False) == "avx512_bf16"
    path = kernel_path("int8", "engine words", flags=spr)
    assert path == {"precision": "int8", "isa": "amx_int8", "engine": "engine words"}
    assert path_text(path) == "int8 amx_int8" and path_text(None) is None
    assert kernel_path("bf16", "named by the engine", isa="amx_bf16", flags=set())["isa"] == "amx_bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        kernel_path("int4", "x")


def test_roofline_judges_each_precision_against_its_own_peak():
    """A bf16 or int8 recipe is measured against the peak its kernels can reach (AMX-class peaks far above fp32's),
    so its share stays below 100 % where the fp32 share would exceed it; unknown precision: the machine's best."""
    from whisperopt.metrics.roofline import precision_peak, roofline, whisper_cost

    cost = whisper_cost({"d_model": 384, "num_mel_bins": 80, "encoder_layers": 4, "decoder_layers": 4,
                         "vocab_size": 51865})  # Whisper tiny's dimensions
    work = cost.encoder_flops + cost.cross_kv_flops
    peaks = {"threads": 2, "fp32_gflops": 100.0, "bf16_gflops": 800.0, "int8_gops": 400.0, "copy_gb_s": 20.0}
    assert precision_peak(peaks, "fp32") == (100.0, "fp32") and precision_peak(peaks, "bf16") == (800.0, "bf16")
    assert precision_peak(peaks, "int8") == (400.0, "int8") and precision_peak(peaks, None) == (800.0, "bf16")
    # no bf16 unit (an AVX2 CPU): bf16 converted in software is slower than fp32, so fp32's peak bounds it
    assert precision_peak({**peaks, "bf16_gflops": 1.0}, "bf16") == (100.0, "fp32")
    fixed = work / 100e9 / 1.5  # 1.5x faster than the fp32 peak allows: only a bf16 (AMX) engine can do that
    rows = [{"tokens": t, "latency_s": fixed + 0.002 * t, "batch": 1} for t in range(5, 45, 4)]
    bf16 = roofline(rows, cost, peaks, 16, "bf16")
    assert bf16["peak"] == "bf16" and bf16["fixed_share"] == pytest.approx(work / fixed / 800e9, rel=1e-3)
    assert bf16["fixed_share"] < 1 < bf16["fixed_share_fp32"] and bf16["full_window"]
    fp32 = roofline(rows, cost, peaks, 32, "fp32")
    assert fp32["fixed_share"] > 1 and fp32["headroom"] < bf16["headroom"]  # a floor at fp32's peak is higher
    assert roofline(rows, cost, peaks, 16, None)["peak"] == "bf16"  # unknown precision: the machine's best peak
