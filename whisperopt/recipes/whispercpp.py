"""whisper.cpp recipes, run through pywhispercpp: f16, q8_0, q5_0, q5_1 and q4_0 ggml weights (CPU).

Build: ``models.ggml.convert_to_ggml`` writes whisper.cpp's ggml model file straight from the resolved checkpoint
(synthetic included): the 2-D matrices in float16 or a ggml block quantisation (the ``gguf`` package's kernels),
the tensors whisper.cpp's quantize tool keeps (1-D, conv biases, positional embeddings) in float32 and the conv
kernels in float16, as whisper.cpp's own converter and quantize tool write them. No whisper.cpp tool runs at build
time; the build check loads the file in whisper.cpp.

Run: ``pywhispercpp.model.Model`` (whisper.cpp's ``whisper_full``) transcribes one utterance at a time from 16 kHz
audio with whisper.cpp's own log-mel front end: greedy (beam search with the runner's ``beam_size`` > 1), temperature
0 without fallback, no timestamps, one segment, no context from previous calls, fixed language and task, no-speech
skipping disabled, suppress_blank and whisper.cpp's non-speech token suppression on (the baseline suppresses the
checkpoint's suppress_tokens). ``run_info()`` records what ran, and the CPU features of the loaded library
(``whisper_print_system_info``).

Fidelity: pywhispercpp exposes neither encoder states nor logits from ``whisper_full``, and its ``whisper_decode`` /
``whisper_get_logits`` bindings take and return scalars. The teacher-forced probe therefore opens the artifact a
second time in the very ``libwhisper`` pywhispercpp loaded, through ctypes (``whisper_set_mel`` with the shared
front end's features, ``whisper_encode``, one ``whisper_decode`` per position, the last row of
``whisper_get_logits``). The encoder's states are internal to whisper.cpp, so the encoder error is not measured;
the build check (``validation.validate_artifact``, told so by ``encoder_check_unsupported``) applies the
teacher-forced floor (and ``validation.REAL_FLOOR``) and, on trained weights, the free-running decode check exactly
as other recipes get them, and records that the encoder check was skipped.

Forced decode length (synthetic checkpoints): ``whisper_full`` stops at end-of-text and its logits-filter callback
reaches Python without the logits, so a length cannot be forced; ``run_info()["not_comparable"]`` says so.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
from pathlib import Path

import numpy as np

from ..constants import N_FRAMES, N_SAMPLES, N_TEXT_CTX
from ..data.features import audio_frames
from ..errors import WhisperoptError, described
from ..files import dist_version
from ..metrics.isa import cpu_flags, kernel_path
from .base import Artifact, DecodeOptions, Recipe, Runtime, Transcription

GGML_FILE = "ggml-model.bin"
# whisper_full's per-window limit (src/whisper.cpp: n_max = n_text_ctx / 2 - 4)
WHISPER_CPP_MAX_TOKENS = N_TEXT_CTX // 2 - 4


_QUIET = False


def _quiet_logs() -> None:
    """Route whisper.cpp's and ggml's log lines (model load, per-call info) to nowhere, until the interpreter exits
    (a Python log callback must not outlive it: whisper.cpp still logs while freeing contexts at shutdown)."""
    global _QUIET
    import _pywhispercpp as pw

    if not _QUIET:
        pw.whisper_log_set(lambda level, text: None)
        atexit.register(pw.whisper_log_set, None)
        _QUIET = True


def system_info() -> str:
    """The CPU features and backends the loaded whisper.cpp library reports."""
    import _pywhispercpp as pw

    return pw.whisper_print_system_info().strip()


# ggml's system-info feature names -> /proc/cpuinfo flags (metrics.isa)
GGML_FLAGS = {"SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "FMA": "fma", "F16C": "f16c",
              "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni",
              "AVX512_BF16": "avx512_bf16", "AVX_VNNI": "avx_vnni", "AMX_INT8": "amx_int8", "NEON": "asimd",
              "DOTPROD": "asimddp", "MATMUL_INT8": "i8mm", "SVE": "sve"}


def ggml_isa_path(precision: str) -> dict:
    """The path ggml's CPU kernels take: the features this library was built with (its system info) that the CPU has."""
    import re

    info = system_info()
    built = {GGML_FLAGS[name] for name in re.findall(r"([A-Z0-9_]+) = 1", info) if name in GGML_FLAGS}
    return kernel_path(precision, f"whisper.cpp system info: {info}", flags=cpu_flags() & built)


def _libwhisper_path() -> str | None:
    """The libwhisper shared library pywhispercpp's extension is linked against (already mapped in this process)."""
    import _pywhispercpp  # noqa: F401  (maps libwhisper)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libwhisper" in line.rsplit("/", 1)[-1]}
    except OSError:
        return None
    return sorted(paths)[0] if paths else None


def _libwhisper() -> ctypes.CDLL:
    path = _libwhisper_path()
    if path is None:
        raise WhisperoptError("cannot find the libwhisper library pywhispercpp loaded (needed for the fidelity probe)")
    lib = ctypes.CDLL(path)
    lib.whisper_init_from_file.restype = ctypes.c_void_p
    lib.whisper_init_from_file.argtypes = [ctypes.c_char_p]
    lib.whisper_free.argtypes = [ctypes.c_void_p]
    lib.whisper_set_mel.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int, ctypes.c_int]
    lib.whisper_encode.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.whisper_decode.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int32), ctypes.c_int, ctypes.c_int,
                                   ctypes.c_int]
    lib.whisper_get_logits.restype = ctypes.POINTER(ctypes.c_float)
    lib.whisper_get_logits.argtypes = [ctypes.c_void_p]
    lib.whisper_n_vocab.argtypes = [ctypes.c_void_p]
    return lib


class WhisperCppRuntime(Runtime):
    fidelity_method = ("teacher-forced logits of whisper.cpp's own whisper_decode on the shared front end's log-mel "
                       "(ctypes into pywhispercpp's libwhisper); whisper.cpp exposes no encoder states, so no "
                       "encoder error")

    def __init__(self, recipe: WhisperCppRecipe, artifact: Artifact, device: str, threads: int):
        from ..models.ggml import read_ggml

        self.recipe = recipe
        self.file = Path(artifact.weights_dir) / artifact.manifest.get("ggml_file", GGML_FILE)
        if not self.file.is_file():
            raise WhisperoptError(f"{recipe.name} artifact incomplete: {self.file} missing; rebuild it")
        # whisper.cpp returns a NULL context on a bad file and pywhispercpp would crash on it later: check first
        self.header = read_ggml(self.file)
        hp = self.header.hparams
        expected = 7 + 15 * hp["n_audio_layer"] + 4 + 24 * hp["n_text_layer"]  # what whisper_model_load requires
        if len(self.header.tensors) != expected:
            raise WhisperoptError(f"{self.file} holds {len(self.header.tensors)} tensors, whisper.cpp expects "
                                  f"{expected} for its hparams; rebuild it")
        self.device, self.threads = device, threads
        self.multilingual = self.header.hparams["n_vocab"] >= 51865
        self.model = None
        self.strategy: str | None = None
        self.settings: dict = {}
        self.not_comparable: str | None = None
        self.decoded = self.forced = 0
        self._probe_ctx = None
        self._lib = None
        _quiet_logs()
        self._make(DecodeOptions())

    def _make(self, options: DecodeOptions) -> None:
        from pywhispercpp.model import Model

        strategy = "beam_search" if options.beam_size > 1 else "greedy"
        if self.model is not None and strategy == self.strategy:
            return
        self.model = None
        gc.collect()
        self.model = Model(str(self.file), params_sampling_strategy=0 if strategy == "greedy" else 1,
                           redirect_whispercpp_logs_to=None, **self._params(options))
        self.strategy = strategy

    def _params(self, options: DecodeOptions) -> dict:
        params = {
            "n_threads": self.threads, "print_progress": False, "print_realtime": False, "print_timestamps": False,
            "print_special": False, "no_timestamps": True, "single_segment": True, "no_context": True,
            "token_timestamps": False, "translate": options.task == "translate",
            "language": (options.language or "auto") if self.multilingual else "en", "detect_language": False,
            "temperature": 0.0, "temperature_inc": 0.0, "suppress_blank": True, "suppress_nst": True,
            "no_speech_thold": 1.0,  # never drop a window as "no speech" (the other engines decode every utterance)
        }
        if options.beam_size > 1:
            params["beam_search"] = {"beam_size": options.beam_size, "patience": -1.0}
        else:
            params["greedy"] = {"best_of": 1}
        return params

    def transcribe(self, audios, options, forced_lengths=None):
        import _pywhispercpp as pw

        self._make(options)
        params = self._params(options)
        reasons = []
        if forced_lengths:
            reasons.append("whisper.cpp (pywhispercpp) cannot force a decode length: whisper_full stops at end-of-text "
                           "and its logits-filter callback reaches Python without the logits, so on random weights it "
                           "decodes a different number of tokens than the reference transcript's")
        if options.max_new_tokens and not forced_lengths:
            reasons.append(f"whisper.cpp has no max_new_tokens (whisper_full decodes at most "
                           f"{WHISPER_CPP_MAX_TOKENS} tokens per window)")
        if reasons and not self.not_comparable:
            self.not_comparable = "; ".join(reasons)
        out = []
        for audio in audios:
            audio = np.ascontiguousarray(audio[:N_SAMPLES], dtype=np.float32)
            frames = audio_frames([audio], self.window)  # whisper.cpp's audio_ctx: encoder positions, frames / 2
            segments = self.model.transcribe(audio, **params, audio_ctx=frames // 2 if frames < N_FRAMES else 0)
            ctx = self.model._ctx
            eot = pw.whisper_token_eot(ctx)
            tokens = [pw.whisper_full_get_token_id(ctx, s, j) for s in range(pw.whisper_full_n_segments(ctx))
                      for j in range(pw.whisper_full_n_tokens(ctx, s))]
            text = " ".join(s.text.strip() for s in segments if s.text.strip())
            out.append(Transcription(text, [t for t in tokens if t < eot]))
        self.decoded += sum(len(t.tokens) for t in out)
        self.forced += sum(forced_lengths) if forced_lengths else 0
        if not self.settings:
            self._record(options, params)
        return out

    def _record(self, options: DecodeOptions, params: dict) -> None:
        shown = {k: v for k, v in params.items() if not k.startswith("print_")}
        self.settings = {
            "engine": f"whisper.cpp (pywhispercpp {dist_version('pywhispercpp')})",
            "api": "pywhispercpp Model.transcribe (whisper_full), one utterance at a time",
            "device": "cpu",
            "sampling_strategy": self.strategy,
            **shown,
            "fallback": "none (temperature_inc 0)",
            "suppress_tokens": "suppress_blank + suppress_nst (whisper.cpp's non-speech token list, like the "
                               "checkpoint's suppress_tokens in transformers' generate)",
            "max_new_tokens": f"whisper.cpp's limit: {WHISPER_CPP_MAX_TOKENS} per window",
            "front_end": "own (whisper.cpp's C++ log-mel from audio, with the artifact's mel filters)",
            "ggml_file": self.file.name,
            "ggml_ftype": self.recipe.ftype,
            "system_info": system_info(),
            "library": Path(os.path.realpath(lib)).name if (lib := _libwhisper_path()) else "unknown",
        }

    def run_info(self) -> dict:
        info = {"decode_settings": dict(self.settings), "isa_path": ggml_isa_path(self.recipe.compute_precision)}
        if self.not_comparable:
            info["not_comparable"] = self.not_comparable
        if self.forced:
            info["decoded_vs_forced_tokens"] = f"{self.decoded} decoded / {self.forced} forced"
        return info

    # --- fidelity probe: the same file in the same library, through whisper.cpp's C API ---
    def _probe(self):
        if self._probe_ctx is None:
            self._lib = _libwhisper()
            ctx = self._lib.whisper_init_from_file(str(self.file).encode())
            if not ctx:
                raise WhisperoptError(f"whisper.cpp cannot load {self.file}")
            self._probe_ctx = ctx
        return self._lib, self._probe_ctx

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray:
        lib, ctx = self._probe()
        mel = np.ascontiguousarray(features[0, :, :N_FRAMES], dtype=np.float32)
        if lib.whisper_set_mel(ctx, mel.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), mel.shape[1], mel.shape[0]):
            raise WhisperoptError(f"{self.recipe.name}: whisper_set_mel rejected features of shape {mel.shape}")
        if lib.whisper_encode(ctx, 0, self.threads):
            raise WhisperoptError(f"{self.recipe.name}: whisper_encode failed")
        n_vocab = lib.whisper_n_vocab(ctx)
        ids = np.ascontiguousarray(tokens, dtype=np.int32)
        top1 = np.full(len(ids), -1, dtype=np.int64)
        # whisper_decode computes the logits of the last token it is given: feed one position at a time
        for i in range(len(ids)):
            if lib.whisper_decode(ctx, ids[i:].ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), 1, i, self.threads):
                raise WhisperoptError(f"{self.recipe.name}: whisper_decode failed at position {i}")
            top1[i] = int(np.ctypeslib.as_array(lib.whisper_get_logits(ctx), shape=(n_vocab,)).argmax())
        return top1

    def close(self) -> None:
        self.model = None
        if self._probe_ctx is not None:
            self._lib.whisper_free(self._probe_ctx)
            self._probe_ctx = None
        gc.collect()


class WhisperCppRecipe(Recipe):
    """One ggml file type, converted from the checkpoint by ``models.ggml`` and run by whisper.cpp."""

    engine = "whispercpp"
    modules = ("pywhispercpp", "gguf")
    devices = ("cpu",)
    ftype = "f16"
    fidelity_floor = 0.95
    window_unsupported = None  # whisper.cpp's audio_ctx (encoder positions = window frames / 2)
    # the build check: teacher-forced top-1 against fidelity_floor (REAL_FLOOR on trained weights), then on trained
    # weights the same free-running decode check as every other recipe (see recipes/validation.py)
    encoder_check_unsupported = "whisper.cpp exposes no encoder states"

    def versions(self) -> dict:
        return {"pywhispercpp": dist_version("pywhispercpp"), "gguf": dist_version("gguf")}

    def build(self, model_dir: Path, out_dir: Path, options: dict, base=None) -> dict:
        from ..models.ggml import FTYPES, convert_to_ggml

        try:
            info = convert_to_ggml(model_dir, Path(out_dir) / GGML_FILE, self.ftype)
        except WhisperoptError:
            raise
        except Exception as exc:  # noqa: BLE001 - a checkpoint the converter cannot read: one line, not a traceback
            raise WhisperoptError(f"{self.name}: cannot convert {model_dir} to ggml: "
                                  f"{described(exc)}") from None
        return {"ggml_file": GGML_FILE, "ggml_ftype": self.ftype, "ggml_ftype_id": FTYPES[self.ftype][0],
                "converter": "whisperopt.models.ggml (whisper.cpp legacy ggml layout; gguf quantisation kernels)",
                **info}

    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        return WhisperCppRuntime(self, artifact, device, threads)


# teacher-forced top-1 floors, measured on synthetic tiny (random weights: nearly tied logits) on the 2 dev-clean
# build utterances (43 positions), AVX2-only CPU: f16 97.7 %, q8_0 95.3 %, q5_1 81.4 %, q5_0 76.7 %, q4_0 37.2 %.
# On trained tiny.en: f16, q8_0, q4_0 100 %, q5_1 97.7 %, q5_0 95.3 %; the decode check's WER on 6 dev-clean
# utterances equals torch-fp32's (0.67 %) for all but q4_0 (1.34 %), where validation.REAL_FLOOR applies.
TYPES = [  # (suffix, ggml file type, bits of the decoder's matrices, floor on random weights, description)
    ("f16", "f16", 16, 0.90, "whisper.cpp float16 matrices (ggml file converted by whisperopt)"),
    ("q8_0", "q8_0", 8, 0.85, "whisper.cpp Q8_0 matrices (8-bit blocks of 32 weights, one f16 scale each)"),
    ("q5_0", "q5_0", 5, 0.60, "whisper.cpp Q5_0 matrices (5-bit blocks of 32 weights, one f16 scale each)"),
    ("q5_1", "q5_1", 5, 0.60, "whisper.cpp Q5_1 matrices (5-bit blocks of 32 weights, f16 scale and minimum)"),
    ("q4_0", "q4_0", 4, 0.25, "whisper.cpp Q4_0 matrices (4-bit blocks of 32 weights, one f16 scale each)"),
]

# ggml multiplies f16 matrices in fp32 (F16C conversions); quantised ones against int8-quantised activations
RECIPES = [WhisperCppRecipe(name=f"whispercpp-{suffix}", ftype=ftype, weight_bits=bits, fidelity_floor=floor,
                            compute_precision="fp32" if ftype == "f16" else "int8",
                            description=desc + ", run by pywhispercpp's whisper_full (one utterance at a time)")
           for suffix, ftype, bits, floor, desc in TYPES]
