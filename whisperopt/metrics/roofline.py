"""How near a recipe runs to this machine's limits: work per utterance from the model's dimensions, the machine's
measured peaks (a short GEMM and memory probe), and each recipe's achieved share.

A Whisper utterance costs a *fixed* part (front end, one encoder pass over the 30-s window, the cross-attention keys
and values, the prompt) and a *per-token* part (one decoder step: every decoder matrix and the vocabulary
projection read once, for a few MFLOPs). Fitting ``latency = fixed + per_token × tokens`` over a recipe's batch-1
rows splits its measured time the same way for every engine, including engines that time nothing themselves.
Rows of an adaptive window (recipe option ``window``) record the seconds their encoder was given (``window_s``): the
fixed work is then each row's encoder + cross-K/V FLOPs at its window (``WhisperCost.fixed_flops``); since the window
grows with the clip as the token count does, part of the encoder's time then lands in the per-token slope.

- fixed part: "at N % of the <precision> peak" — the encoder's FLOPs over the fitted fixed time (a lower bound on
  the encoder's own share: the fixed time also holds the front end and the prompt), against the best GEMM peak the
  precision the recipe's matrix products ran in can use (``PEAK_FOR``: fp32 the fp32 peak; bf16/fp16 the better of
  the bf16 and fp32 peaks; int8 the better of the int8 and fp32 peaks);
- per token: "K GB/s of weights read" — decoder weight bytes (parameters × the artifact's bytes per parameter)
  over the fitted per-token time, next to the machine's measured copy bandwidth;
- headroom: measured eval time / the recipe's floor on this machine (encoder at that peak, each token at the larger
  of its weight bytes over the bandwidth and its FLOPs over that peak). 1× is the limit.

The peaks are probed with the kernels that reach them (``probe_peaks``): fp32 the faster of torch.mm (MKL) and oneDNN
(the engines' own fp32 kernels; MKL's sgemm is the slower one on AMD EPYC), bf16 torch.mm in bfloat16
(oneDNN: AMX-BF16 / AVX512-BF16 where the CPU has them; slow where it has neither, which is the honest figure) and
int8 the faster of torch's fbgemm (VNNI) and oneDNN (AMX-INT8, VNNI) quantised Linear; each records its backend.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..constants import CHUNK_LENGTH

PROBE_SIZE = 1024  # square GEMM: large enough to reach the kernels' peak, small enough for ~1 s per probe
PROBE_REPEATS = 8
SLOW_PROBE_S = 0.05  # a GEMM slower than this per call (bf16 without a bf16 unit) is probed on a smaller square
# names the probe: a record of peaks probed by another version of it is not reused (bench.runner keeps one a day)
PEAKS_METHOD = 2
INT8_BACKENDS = ("fbgemm", "onednn")  # torch's quantised engines: fbgemm (VNNI/AVX2), oneDNN (AMX-INT8, VNNI)
# the peaks a precision's matrix products can use (the fp32 kernels are always there)
PEAK_FOR = {"fp32": ("fp32",), "bf16": ("bf16", "fp32"), "fp16": ("bf16", "fp32"), "int8": ("int8", "fp32")}
PEAK_KEYS = {"fp32": "fp32_gflops", "bf16": "bf16_gflops", "int8": "int8_gops"}
BANDWIDTH_BYTES = 256 * 2**20  # beyond any last-level cache
MIN_FIT_ROWS = 5


@dataclass(frozen=True)
class WhisperCost:
    encoder_flops: float  # one 30-s window: both convolutions and every encoder layer
    cross_kv_flops: float  # the decoder's cross-attention keys/values over the encoder output (once per window)
    token_flops: float  # one decoder step (attention over a typical context included)
    token_weight_params: float  # parameters a decoder step reads (every decoder matrix + the vocabulary projection)
    params: float  # all parameters (to turn the artifact's size into bytes per parameter)
    encoder_attention_flops: float = 0.0  # the part of encoder_flops quadratic in the window (self-attention)

    def fixed_flops(self, window_s: float | None = None) -> float:
        """Encoder + cross-attention K/V FLOPs of one window of ``window_s`` seconds (None or 30: the full window;
        the adaptive ``window`` option encodes less): linear in the window, self-attention quadratic."""
        r = 1.0 if not window_s else min(window_s / CHUNK_LENGTH, 1.0)
        linear = self.encoder_flops - self.encoder_attention_flops + self.cross_kv_flops
        return linear * r + self.encoder_attention_flops * r * r


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
                       params=float(enc_params + dec_params), encoder_attention_flops=float(le * 4 * frames * frames * d))


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: packing, thread pool start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _gemm_gflops(a, b, n: int, repeats: int = PROBE_REPEATS) -> float:
    import torch

    return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def _fp32_probe(a, b, n: int) -> tuple[float, str]:
    """The faster of torch.mm (MKL's sgemm where torch has MKL) and oneDNN's fp32 Linear (the kernels OpenVINO and
    CTranslate2 use): on an AMD EPYC MKL's sgemm reaches ~40 GFLOP/s on 2 threads where oneDNN reaches 50-67."""
    import torch

    figures = {"torch.mm": _gemm_gflops(a, b, n)}
    try:
        with warnings.catch_warnings():  # torch.utils.mkldnn still defines its modules with torch.jit.script_method
            warnings.simplefilter("ignore", DeprecationWarning)
            from torch.utils import mkldnn

        linear = mkldnn.to_mkldnn(torch.nn.Linear(n, n, bias=False).eval())
        x = a.to_mkldnn()
        with torch.inference_mode():
            figures["oneDNN Linear"] = 2 * n**3 / _best_seconds(lambda: linear(x), PROBE_REPEATS) / 1e9
    except (RuntimeError, AttributeError):  # a torch build without oneDNN
        pass
    best = max(figures, key=figures.get)
    return figures[best], (f"{best} (" + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in figures.items())
                           + f"; torch CPU capability {torch.backends.cpu.get_cpu_capability()})")


def _bf16_probe(n: int) -> tuple[float | None, str]:
    """bf16 torch.mm GFLOP/s and the kernel behind it. Where a call is slow (no bf16 unit: converted in software) the
    square shrinks so the probe stays well under a second; such a kernel's rate hardly depends on the size."""
    import torch

    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False

    def has(name: str) -> bool:  # torch's own CPU feature checks (private, so looked up with care)
        return bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)())

    unit = ("AMX-BF16" if has("amx_tile") and has("avx512_bf16") else
            "AVX512-BF16" if has("avx512_bf16") else "no bf16 unit")
    backend = f"oneDNN ({unit})" if onednn else "ATen's reference kernel (no oneDNN bf16 on this CPU)"
    size = 256
    try:
        a, b = torch.randn(size, size, dtype=torch.bfloat16), torch.randn(size, size, dtype=torch.bfloat16)
        torch.mm(a, b)  # warm-up
        start = time.perf_counter()
        torch.mm(a, b)
        per_call = time.perf_counter() - start
        while size < n and per_call * 8 <= SLOW_PROBE_S:
            size, per_call = size * 2, per_call * 8
        if size != 256:
            a, b = torch.randn(size, size, dtype=torch.bfloat16), torch.randn(size, size, dtype=torch.bfloat16)
        repeats = PROBE_REPEATS if per_call * PROBE_REPEATS <= 4 * SLOW_PROBE_S else 3
        return _gemm_gflops(a, b, size, repeats), f"{backend}, {size}x{size}x{size}"
    except RuntimeError:  # a torch build without bf16 matmul on CPU
        return None, backend


def _int8_probe(a, n: int) -> tuple[float | None, str | None, dict]:
    """The faster of torch's quantised engines on a dynamic-int8 Linear (activation quantisation included, as every
    int8 recipe pays it): fbgemm (AVX2 / AVX512-VNNI) and oneDNN (AMX-INT8 where present, else VNNI / AVX2)."""
    import torch

    old = torch.backends.quantized.engine
    figures = {}
    try:
        for engine in INT8_BACKENDS:
            if engine not in torch.backends.quantized.supported_engines:
                continue
            try:
                torch.backends.quantized.engine = engine
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    linear = torch.ao.quantization.quantize_dynamic(
                        torch.nn.Sequential(torch.nn.Linear(n, n, bias=False)), {torch.nn.Linear}, dtype=torch.qint8)
                    with torch.inference_mode():
                        figures[engine] = round(2 * n**3 / _best_seconds(lambda m=linear: m(a), PROBE_REPEATS) / 1e9, 1)
            except (RuntimeError, AttributeError):  # a torch build without this quantised engine
                continue
    finally:
        torch.backends.quantized.engine = old
    if not figures:
        return None, None, figures
    best = max(figures, key=figures.get)
    return figures[best], best, figures


def probe_peaks(threads: int) -> dict:
    """This machine's fp32, bf16 and int8 GEMM throughput on ``threads`` threads and its memory copy bandwidth.

    fp32: the faster of torch.mm (MKL sgemm) and oneDNN's fp32 Linear; bf16: torch.mm in bfloat16 (oneDNN: AMX-BF16 or AVX512-BF16 where the CPU has
    them; converted in software where it has neither, which is slow and honest); int8: the faster of torch's fbgemm
    and oneDNN dynamic-quantised Linear (activation quantisation included); bandwidth: numpy copy of 256 MiB (read +
    write bytes). Best of a few repeats: a peak, not a typical figure. Each figure names the kernel that reached it."""
    import torch

    n = PROBE_SIZE
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        fp32, fp32_backend = _fp32_probe(a, b, n)
        bf16, bf16_backend = _bf16_probe(n)
        int8, int8_backend, int8_by = _int8_probe(a, n)
    finally:
        torch.set_num_threads(old)
    src = np.ones(BANDWIDTH_BYTES // 8)
    dst = np.empty_like(src)
    bandwidth = 2 * src.nbytes / _best_seconds(lambda: np.copyto(dst, src), 3) / 1e9
    return {"threads": threads, "fp32_gflops": round(fp32, 1),
            "bf16_gflops": None if bf16 is None else round(bf16, 1),
            "int8_gops": None if int8 is None else round(int8, 1),
            "copy_gb_s": round(bandwidth, 1),
            "backends": {"fp32": fp32_backend,
                         "bf16": f"torch.mm bfloat16: {bf16_backend}",
                         "int8": f"torch dynamic-int8 Linear on {int8_backend} ("
                                 + ", ".join(f"{k} {v} GOP/s" for k, v in int8_by.items()) + ")"
                         if int8_backend else "none"},
            "method": f"best of {PROBE_REPEATS}: the faster of torch.mm and oneDNN fp32, torch.mm bf16, the faster "
                      f"of torch's dynamic-int8 Linear engines ({'/'.join(INT8_BACKENDS)}) on {n}x{n}x{n}; numpy copy "
                      f"of {BANDWIDTH_BYTES // 2**20} MiB "
                      "(read + write)"}


def precision_peak(peaks: dict, precision: str | None) -> tuple[float, str] | None:
    """(GFLOP/s, which peak) the best the matrix products of ``precision`` can reach here (``PEAK_FOR``); None
    precision: the best of every peak (the machine's)."""
    usable = PEAK_FOR.get(precision or "", tuple(PEAK_KEYS))
    found = [(peaks[PEAK_KEYS[p]], p) for p in usable if peaks.get(PEAK_KEYS[p])]
    return max(found) if found else None


def fit_fixed_per_token(rows: list[dict]) -> tuple[float, float] | None:
    """(fixed s, s per token) from a Theil-Sen line through batch-1 rows' latency against tokens (the median of the
    pairwise slopes, then the median intercept: one utterance slowed by something else on the cores moves a
    least-squares line, not this one); None when the rows cannot separate the two (too few, all the same length, or
    a line that is not increasing)."""
    pts = [(r["tokens"], r["latency_s"]) for r in rows if r.get("batch", 1) == 1 and r.get("tokens")]
    if len(pts) < MIN_FIT_ROWS or len({t for t, _ in pts}) < 3:
        return None
    x, y = np.array(pts, dtype=float).T
    i, j = np.triu_indices(len(x), k=1)
    apart = x[j] != x[i]
    slope = float(np.median((y[j] - y[i])[apart] / (x[j] - x[i])[apart]))
    intercept = float(np.median(y - slope * x))
    if slope <= 0 or intercept <= 0:
        return None
    return float(intercept), float(slope)


def roofline(rows: list[dict], cost: WhisperCost, peaks: dict, weight_bits: int,
             precision: str | None = None) -> dict | None:
    """A recipe's achieved share of the machine's limits (see the module docstring); None without a fit.

    ``weight_bits``: the precision of the matrices its decoder reads each step (``Recipe.weight_bits``);
    ``precision``: the precision its matrix products ran in (``fp32``, ``bf16``, ``fp16``, ``int8``; None: unknown,
    judged against the machine's best peak)."""
    fit = fit_fixed_per_token(rows)
    if fit is None or not peaks or not peaks.get("fp32_gflops"):
        return None
    fixed, per_token = fit
    batch1 = [r for r in rows if r.get("batch", 1) == 1]
    # each row's fixed work at the window its encoder was given (rows without window_s: the full 30 s)
    works = [cost.fixed_flops(r.get("window_s")) for r in batch1]
    work = sum(works) / len(works) if works else cost.fixed_flops()
    int8 = peaks.get("int8_gops")
    own, own_name = precision_peak(peaks, precision)
    machine = precision_peak(peaks, None)[0] * 1e9
    own *= 1e9
    out = {"fixed_ms": 1000 * fixed, "per_token_ms": 1000 * per_token,
           "precision": precision, "peak": own_name, "peak_gflops": own / 1e9, "fixed_share": work / fixed / own,
           "fixed_share_fp32": work / fixed / (peaks["fp32_gflops"] * 1e9),
           "fixed_share_int8": work / fixed / (int8 * 1e9) if int8 else None,
           "decoder_gb_s": cost.token_weight_params * weight_bits / 8 / per_token / 1e9,
           "weight_bits": weight_bits}
    # faster than one 30-s encoder pass at the machine's best peak: the engine encodes less than a full window (its
    # encoder time grows with the audio and lands in the per-token slope), so the split says nothing
    out["full_window"] = work / fixed <= machine
    token_floor = max(cost.token_weight_params * weight_bits / 8 / (peaks["copy_gb_s"] * 1e9), cost.token_flops / own)
    out["window_s_mean"] = sum(r.get("window_s") or CHUNK_LENGTH for r in batch1) / len(batch1) if batch1 else None
    floor = sum(w / own + r["tokens"] * token_floor for w, r in zip(works, batch1))
    out["floor_s"] = floor
    out["headroom"] = sum(r["latency_s"] for r in batch1) / floor if floor > 0 else None
    return out


def peaks_text(peaks: dict) -> str:
    int8 = f"{peaks['int8_gops']:.0f} int8 GOP/s" if peaks.get("int8_gops") else "int8 n/a"
    bf16 = f"{peaks['bf16_gflops']:.0f} bf16 GFLOP/s, " if peaks.get("bf16_gflops") else ""
    return (f"{peaks['fp32_gflops']:.0f} fp32 GFLOP/s, {bf16}{int8}, {peaks['copy_gb_s']:.0f} GB/s copy "
            f"on {peaks['threads']} threads")


__all__ = ["PEAK_FOR", "PEAKS_METHOD", "WhisperCost", "fit_fixed_per_token", "peaks_text", "precision_peak", "probe_peaks",
           "roofline", "whisper_cost"]
