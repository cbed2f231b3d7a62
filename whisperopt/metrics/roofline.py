"""How near a recipe runs to this machine's limits: work per utterance from the model's dimensions, the machine's
measured peaks (a short GEMM and memory probe), and each recipe's achieved share.

A Whisper utterance costs a *fixed* part (front end, one encoder pass over the 30-s window, the cross-attention keys
and values, the prompt) and a *per-token* part (one decoder step: every decoder matrix and the vocabulary
projection read once, for a few MFLOPs). Fitting ``latency = fixed + per_token × tokens`` over a recipe's batch-1
rows splits its measured time the same way for every engine, including engines that time nothing themselves.

- fixed part: "at N % of fp32 peak / M % of int8 peak" — the encoder's FLOPs over the fitted fixed time (a lower
  bound on the encoder's own share: the fixed time also holds the front end and the prompt);
- per token: "K GB/s of weights read" — decoder weight bytes (parameters × the artifact's bytes per parameter)
  over the fitted per-token time, next to the machine's measured copy bandwidth;
- headroom: measured eval time / this machine's floor (encoder at the int8 GEMM peak, each token at the larger of
  its int8 weight bytes over the bandwidth and its FLOPs over the int8 peak). 1× is the limit.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

PROBE_SIZE = 1024  # square GEMM: large enough to reach the kernels' peak, small enough for ~1 s per probe
PROBE_REPEATS = 8
BANDWIDTH_BYTES = 256 * 2**20  # beyond any last-level cache
MIN_FIT_ROWS = 5


@dataclass(frozen=True)
class WhisperCost:
    encoder_flops: float  # one 30-s window: both convolutions and every encoder layer
    cross_kv_flops: float  # the decoder's cross-attention keys/values over the encoder output (once per window)
    token_flops: float  # one decoder step (attention over a typical context included)
    token_weight_params: float  # parameters a decoder step reads (every decoder matrix + the vocabulary projection)
    params: float  # all parameters (to turn the artifact's size into bytes per parameter)


def whisper_cost(config: dict, context: int = 64) -> WhisperCost:
    """Multiply-adds × 2 of a Whisper model from its HF ``config.json`` (``context``: decoder positions attended)."""
    d, mels = config["d_model"], config["num_mel_bins"]
    frames = config.get("max_source_positions", 1500)
    le, ld = config["encoder_layers"], config["decoder_layers"]
    fe, fd = config.get("encoder_ffn_dim", 4 * d), config.get("decoder_ffn_dim", 4 * d)
    vocab = config["vocab_size"]
    conv = 2 * (2 * frames) * d * mels * 3 + 2 * frames * d * d * 3
    enc_layer = 2 * frames * (4 * d * d + 2 * d * fe) + 2 * 2 * frames * frames * d
    cross_kv = ld * 2 * (2 * frames * d * d)
    dec_layer = 2 * (4 * d * d + 2 * d * d + 2 * d * fd) + 2 * 2 * (context + frames) * d
    token_params = ld * (6 * d * d + 2 * d * fd) + vocab * d
    enc_params = mels * d * 3 + d * d * 3 + le * (4 * d * d + 2 * d * fe) + frames * d
    dec_params = token_params + ld * 2 * d * d + config.get("max_target_positions", 448) * d
    return WhisperCost(encoder_flops=float(conv + le * enc_layer), cross_kv_flops=float(cross_kv),
                       token_flops=float(ld * dec_layer + 2 * vocab * d), token_weight_params=float(token_params),
                       params=float(enc_params + dec_params))


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: packing, thread pool start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def probe_peaks(threads: int) -> dict:
    """This machine's fp32 and int8 GEMM throughput on ``threads`` threads and its memory copy bandwidth.

    fp32: torch.mm (oneDNN/MKL sgemm); int8: torch's dynamic-quantised Linear (fbgemm: VNNI where the CPU has it,
    AVX2 madd otherwise; activation quantisation included, as every int8 recipe pays it); bandwidth: numpy copy of
    256 MiB (read + write bytes). Best of a few repeats: a peak, not a typical figure."""
    import torch

    n = PROBE_SIZE
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        fp32 = 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), PROBE_REPEATS) / 1e9
        int8 = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                linear = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(n, n, bias=False)),
                                                                {torch.nn.Linear}, dtype=torch.qint8)
                with torch.inference_mode():
                    int8 = 2 * n**3 / _best_seconds(lambda: linear(a), PROBE_REPEATS) / 1e9
        except (RuntimeError, AttributeError):  # a torch build without a quantised engine
            int8 = None
    finally:
        torch.set_num_threads(old)
    src = np.ones(BANDWIDTH_BYTES // 8)
    dst = np.empty_like(src)
    bandwidth = 2 * src.nbytes / _best_seconds(lambda: np.copyto(dst, src), 3) / 1e9
    return {"threads": threads, "fp32_gflops": round(fp32, 1), "int8_gops": None if int8 is None else round(int8, 1),
            "copy_gb_s": round(bandwidth, 1),
            "method": f"best of {PROBE_REPEATS}: torch.mm fp32 and fbgemm dynamic-int8 Linear on {n}x{n}x{n}; "
                      f"numpy copy of {BANDWIDTH_BYTES // 2**20} MiB (read + write)"}


def fit_fixed_per_token(rows: list[dict]) -> tuple[float, float] | None:
    """(fixed s, s per token) from a least-squares line through batch-1 rows' latency against tokens; None when the
    rows cannot separate the two (too few, all the same length, or a line that is not increasing)."""
    pts = [(r["tokens"], r["latency_s"]) for r in rows if r.get("batch", 1) == 1 and r.get("tokens")]
    if len(pts) < MIN_FIT_ROWS or len({t for t, _ in pts}) < 3:
        return None
    x, y = np.array(pts, dtype=float).T
    slope, intercept = np.polyfit(x, y, 1)
    if slope <= 0 or intercept <= 0:
        return None
    return float(intercept), float(slope)


def roofline(rows: list[dict], cost: WhisperCost, peaks: dict, weight_bits: int) -> dict | None:
    """A recipe's achieved share of the machine's limits (see the module docstring); None without a fit.

    ``weight_bits``: the precision of the matrices its decoder reads each step (``Recipe.weight_bits``)."""
    fit = fit_fixed_per_token(rows)
    if fit is None or not peaks or not peaks.get("fp32_gflops"):
        return None
    fixed, per_token = fit
    work = cost.encoder_flops + cost.cross_kv_flops
    int8 = peaks.get("int8_gops")
    best = max(peaks["fp32_gflops"], int8 or 0) * 1e9
    out = {"fixed_ms": 1000 * fixed, "per_token_ms": 1000 * per_token,
           "fixed_share_fp32": work / fixed / (peaks["fp32_gflops"] * 1e9),
           "fixed_share_int8": work / fixed / (int8 * 1e9) if int8 else None,
           "decoder_gb_s": cost.token_weight_params * weight_bits / 8 / per_token / 1e9,
           "weight_bits": weight_bits}
    # faster than one 30-s encoder pass at the machine's best: the engine encodes less than a full window (its
    # encoder time grows with the audio and lands in the per-token slope), so the split says nothing
    out["full_window"] = work / fixed <= best
    token_floor = max(cost.token_weight_params / (peaks["copy_gb_s"] * 1e9), cost.token_flops / best)
    batch1 = [r for r in rows if r.get("batch", 1) == 1]
    floor = sum(work / best + r["tokens"] * token_floor for r in batch1)
    out["floor_s"] = floor
    out["headroom"] = sum(r["latency_s"] for r in batch1) / floor if floor > 0 else None
    return out


def peaks_text(peaks: dict) -> str:
    int8 = f"{peaks['int8_gops']:.0f} int8 GOP/s" if peaks.get("int8_gops") else "int8 n/a"
    return (f"{peaks['fp32_gflops']:.0f} fp32 GFLOP/s, {int8}, {peaks['copy_gb_s']:.0f} GB/s copy "
            f"on {peaks['threads']} threads")


__all__ = ["WhisperCost", "fit_fixed_per_token", "peaks_text", "probe_peaks", "roofline", "whisper_cost"]
