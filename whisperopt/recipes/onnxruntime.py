"""ONNX Runtime recipes: Optimum export, ISA-aware dynamic int8, static QDQ int8, int4 weight-only, fp16 (CUDA).

Build
  * Every recipe starts from one Optimum export of the checkpoint (``optimum.exporters.onnx.main_export``, task
    ``automatic-speech-recognition-with-past``): encoder, decoder, decoder-with-past and the merged decoder (one
    graph, an ``If`` on ``use_cache_branch`` choosing the no-past or the with-past branch, tied embedding / output
    projection stored once). That export is itself a cached artifact (``onnx-export``, not a user recipe) shared by
    the recipes below; each recipe's artifact holds ``encoder_model.onnx`` + ``decoder_model_merged.onnx`` only.
  * ``onnx-int8-dynamic``: ``quantize_dynamic``; the preset (weight type, reduce_range) follows the CPU's ISA, read
    from /proc/cpuinfo (or the ``isa`` option), see ``DYNAMIC_PRESETS``.
  * ``onnx-int8-static``: QDQ ``quantize_static`` (percentile ranges for the encoder, min/max for the decoders); the
    encoder is calibrated on log-mel features of
    LibriSpeech dev-clean, the decoder and decoder-with-past on real decoder inputs (reference transcript tokens,
    encoder states and KV caches produced by the fp32 export on the same dev-clean audio); both decoders are
    quantised separately and merged again with Optimum's ``merge_decoders`` (identical weights are stored once).
  * ``onnx-int4``: ``MatMulNBitsQuantizer`` (block-wise 4-bit weights, MatMulNBits); the embedding table can go to
    GatherBlockQuantized.
  * The output projection (``proj_out``, tied to the embedding table) is the largest MatMul of the decoder. Option
    ``lm_head`` decides whether it is quantised: on, it is made a constant where an export feeds it through
    ``Transpose(embed_tokens)`` (ORT's quantisers only take constant weights); off, its node is excluded.
  * After building, every artifact is checked against torch-fp32 on dev-clean (``fidelity_check``): encoder relative
    error and teacher-forced top-1 agreement; a build under the recipe's floor fails (a broken export never runs).

Run: Optimum's ``ORTModelForSpeechSeq2Seq`` (transformers' Whisper ``generate``) on ``onnxruntime`` sessions with
``intra_op_num_threads`` = the bench threads, the graph optimisation level of option ``graph_optimization``, the
CUDA execution provider and IO binding on CUDA.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import WhisperoptError
from .base import Artifact, Recipe
from .pytorch import copy_side_files
from .transformers_runtime import GenerateRuntime
from .validation import fidelity_check, probe_job, require_fidelity, torch_reference  # noqa: F401 (re-exported)

ENCODER = "encoder_model.onnx"
DECODER = "decoder_model.onnx"
DECODER_WITH_PAST = "decoder_with_past_model.onnx"
DECODER_MERGED = "decoder_model_merged.onnx"
EXPORT_TASK = "automatic-speech-recognition-with-past"
CALIBRATION_DATASET = "librispeech:dev-clean"  # never test data
EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf's 2 GB limit: larger graphs keep their weights in a side file

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
CALIBRATION_METHODS = ("auto", "minmax", "entropy", "percentile")  # auto: percentile encoder, min/max decoders

# ---------------------------------------------------------------------------------------------------------------------
# CPU ISA and the dynamic-quantisation preset that fits it
# ---------------------------------------------------------------------------------------------------------------------

# ORT's dynamic quantisation always quantises activations to uint8; the weight type picks the kernel:
#   U8S8 (weights int8): x86 AVX2/AVX-512 use VPMADDUBSW, whose int16 intermediate sums can saturate; reduce_range
#       (7-bit weights) keeps them in range. With VNNI (VPDPBUSD, or AMX tiles) u8*s8 accumulates straight into int32,
#       so full 8-bit weights are safe and fastest.
#   U8U8 (weights uint8): no saturation on any x86 ISA, slower kernels; the safe choice for an unknown CPU.
#   ARM64: U8S8 runs on the SDOT/UDOT (or NEON widening) kernels without saturation; full range.
DYNAMIC_PRESETS = {
    "amx": {"weight_type": "QInt8", "reduce_range": False,
            "why": "AMX-INT8 (and VNNI) accumulate u8*s8 in int32: no saturation, full 8-bit weights (U8S8)"},
    "avx512_vnni": {"weight_type": "QInt8", "reduce_range": False,
                    "why": "AVX-512-VNNI VPDPBUSD accumulates u8*s8 in int32: no saturation, full 8-bit weights (U8S8)"},
    "avx_vnni": {"weight_type": "QInt8", "reduce_range": False,
                 "why": "AVX-VNNI VPDPBUSD accumulates u8*s8 in int32: no saturation, full 8-bit weights (U8S8)"},
    "avx512": {"weight_type": "QInt8", "reduce_range": True,
               "why": "AVX-512 without VNNI uses VPMADDUBSW (int16 pair sums saturate): 7-bit weights (U8S8 "
                      "reduce_range)"},
    "avx2": {"weight_type": "QInt8", "reduce_range": True,
             "why": "AVX2 without VNNI uses VPMADDUBSW (int16 pair sums saturate): 7-bit weights (U8S8 reduce_range)"},
    "arm64": {"weight_type": "QInt8", "reduce_range": False,
              "why": "ARM64 SDOT/UDOT/NEON kernels accumulate in int32: full 8-bit weights (U8S8)"},
    "u8u8": {"weight_type": "QUInt8", "reduce_range": False,
             "why": "U8U8 (uint8 weights): no saturation on any x86 kernel; portable, slower than U8S8 with VNNI"},
}
ISA_CHOICES = ("auto",) + tuple(DYNAMIC_PRESETS)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def detect_isa(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The best integer-GEMM ISA of this CPU, one of DYNAMIC_PRESETS (never assumed: read from /proc/cpuinfo)."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if "amx_int8" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx_vnni" in flags:
        return "avx_vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "u8u8"


def resolve_isa(option: str) -> tuple[str, str]:
    """(detected ISA, ISA whose preset is used)."""
    if option not in ISA_CHOICES:
        raise WhisperoptError(f"isa must be one of {', '.join(ISA_CHOICES)}, got {option!r}")
    detected = detect_isa()
    return detected, (detected if option == "auto" else option)


def parse_op_types(text: str, allowed: tuple[str, ...]) -> list[str]:
    ops = [o.strip() for o in str(text).replace("+", ",").split(",") if o.strip()]
    bad = [o for o in ops if o not in allowed]
    if not ops or bad:
        raise WhisperoptError(f"op_types must be a comma-separated subset of {', '.join(allowed)}, got {text!r}")
    return ops


# ---------------------------------------------------------------------------------------------------------------------
# ONNX graph helpers
# ---------------------------------------------------------------------------------------------------------------------


def iter_graphs(graph):
    """The graph and, recursively, every subgraph (the merged decoder's If branches)."""
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graphs(g)


def op_counts(model) -> dict:
    counts: Counter = Counter()
    for g in iter_graphs(model.graph):
        counts.update(n.op_type for n in g.node)
    return dict(counts)


def untie_lm_head(model) -> int:
    """Make ``proj_out``'s weight a constant: replace ``Transpose(initializer) -> MatMul`` by a transposed initializer.

    Optimum stores Whisper's tied embedding once and feeds the output projection ``Transpose(embed_tokens)``; ORT's
    quantisers only quantise MatMuls whose B input is an initializer. Returns how many Transpose nodes were folded.
    """
    from onnx import numpy_helper

    top = model.graph
    inits = {t.name: t for t in top.initializer}
    folded, added = 0, set()
    for g in iter_graphs(top):
        local = {t.name: t for t in g.initializer}
        consumers: Counter = Counter(i for n in g.node for i in n.input)
        for node in list(g.node):
            if node.op_type != "Transpose" or len(node.input) != 1:
                continue
            src = local.get(node.input[0]) or inits.get(node.input[0])
            out = node.output[0]
            if src is None or len(src.dims) != 2:
                continue
            users = [n for n in g.node if out in n.input]
            if not users or any(n.op_type != "MatMul" or list(n.input).index(out) != 1 for n in users):
                continue
            if consumers[out] != len(users):
                continue
            perm = [a.ints for a in node.attribute if a.name == "perm"]
            if perm and list(perm[0]) != [1, 0]:
                continue
            if out not in added and out not in inits:
                arr = numpy_helper.to_array(src).T.copy()
                top.initializer.append(numpy_helper.from_array(arr, out))
                added.add(out)
            g.node.remove(node)
            folded += 1
    return folded


def lm_head_nodes(model) -> list[str]:
    """Names of the MatMul nodes producing ``logits`` (the output projection), in every (sub)graph."""
    return [n.name for g in iter_graphs(model.graph) for n in g.node if n.op_type == "MatMul" and "logits" in n.output]


def prepare_lm_head(model, quantize_it: bool) -> list[str]:
    """Make the output projection quantisable (fold a Transpose into a constant) or return its nodes to exclude."""
    if quantize_it:
        untie_lm_head(model)
        return []
    return lm_head_nodes(model)


@contextlib.contextmanager
def quiet_quantizers():
    """ORT's quantisers configure the root logger at INFO on import and log every node; keep builds readable."""
    import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401  (its import calls logging.basicConfig)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def save_model(model, path: Path) -> None:
    import onnx

    path = Path(path)
    big = model.ByteSize() > EXTERNAL_DATA_THRESHOLD if _serialisable(model) else True
    if big:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + "_data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _serialisable(model) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:  # ByteSize fails above 2 GB
        return False


def model_files(directory: Path) -> list[Path]:
    """The .onnx graphs of an artifact and their external-data files."""
    directory = Path(directory)
    out = []
    for p in sorted(directory.iterdir()):
        if p.is_file() and (p.suffix == ".onnx" or p.name.endswith((".onnx_data", ".onnx.data"))):
            out.append(p)
    return out


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _decoder_dims(model_dir: Path) -> tuple[int, int, int]:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    heads = cfg["decoder_attention_heads"]
    return cfg["decoder_layers"], heads, cfg["d_model"] // heads


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def decoder_feed(session, input_ids: np.ndarray, encoder_hidden_states: np.ndarray, heads: int, head_dim: int,
                 past: dict | None = None) -> dict:
    """Inputs for an exported decoder session (plain, with-past or merged); no past -> the no-cache branch."""
    feed = {}
    batch, seq = input_ids.shape
    past_len = 0
    if past:
        past_len = next(v.shape[2] for k, v in past.items() if ".decoder." in k)
    for inp in session.get_inputs():
        name, dtype = inp.name, _NP_TYPES.get(inp.type, np.float32)
        if name == "input_ids":
            feed[name] = input_ids.astype(dtype)
        elif name == "encoder_hidden_states":
            feed[name] = encoder_hidden_states.astype(dtype)
        elif name == "use_cache_branch":
            feed[name] = np.array([bool(past)])
        elif name.startswith("past_key_values."):
            if past:
                feed[name] = past[name].astype(dtype)
            else:
                feed[name] = np.zeros((batch, heads, 0, head_dim), dtype=dtype)
        elif name == "cache_position":
            feed[name] = np.arange(past_len, past_len + seq, dtype=dtype)
        elif name in ("attention_mask", "decoder_attention_mask"):
            feed[name] = np.ones((batch, past_len + seq), dtype=dtype)
        else:
            raise WhisperoptError(f"unexpected decoder input {name!r} in the ONNX graph")
    return feed


# ---------------------------------------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------------------------------------


class OrtRuntime(GenerateRuntime):
    """Optimum's ORTModelForSpeechSeq2Seq under transformers' generate, plus encoder / teacher-forced probes."""

    def __init__(self, model, model_dir: Path, device: str, session_info: dict):
        import torch

        super().__init__(model, model_dir, device=device, dtype=torch.float32 if device == "cuda" else None)
        self.session_info = session_info
        _, self.heads, self.head_dim = _decoder_dims(model_dir)
        self.encoder_session = model.encoder.session
        self.decoder_session = model.decoder.session
        enc_in = self.encoder_session.get_inputs()[0]
        self._enc_name, self._enc_dtype = enc_in.name, _NP_TYPES.get(enc_in.type, np.float32)

    def _encode(self, features: np.ndarray) -> np.ndarray:
        out = self.encoder_session.run(["last_hidden_state"], {self._enc_name: features.astype(self._enc_dtype)})
        return out[0]

    def encoder_output(self, features: np.ndarray) -> np.ndarray:
        return self._encode(features).astype(np.float32)

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray:
        """Teacher forcing through the path generation takes: the first token on the no-cache branch, then one token
        per step on the KV-cache branch (so a broken cache fails the check as well as broken weights)."""
        enc = self._encode(features)
        sess = self.decoder_session
        names = [o.name for o in sess.get_outputs()]
        ids = np.asarray([tokens], dtype=np.int64)
        past, top1 = None, []
        for i in range(ids.shape[1]):
            feed = decoder_feed(sess, ids[:, i:i + 1], enc, self.heads, self.head_dim, past=past)
            outs = dict(zip(names, sess.run(None, feed)))
            top1.append(int(np.asarray(outs["logits"])[0, -1].argmax()))
            present = {k.replace("present.", "past_key_values."): v for k, v in outs.items()
                       if k.startswith("present.")}
            if past is None:
                past = present
            else:  # the cache branch returns the grown self-attention cache; cross-attention keys stay as computed
                past = {k: (present[k] if ".decoder." in k else past[k]) for k in past}
        return np.asarray(top1)

    def close(self) -> None:
        self.model = None
        self.encoder_session = self.decoder_session = None


def session_options(threads: int, level: str):
    import onnxruntime as ort

    if level not in GRAPH_OPT_LEVELS:
        raise WhisperoptError(f"graph_optimization must be one of {', '.join(GRAPH_OPT_LEVELS)}, got {level!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.log_severity_level = 3
    return so


def load_ort_model(directory: Path, device: str, threads: int, level: str):
    """(ORTModelForSpeechSeq2Seq, session info) for an artifact directory."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSpeechSeq2Seq

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise WhisperoptError("onnxruntime has no CUDA execution provider here (install onnxruntime-gpu)")
        provider, io_binding = "CUDAExecutionProvider", True
    else:
        provider, io_binding = "CPUExecutionProvider", False
    model = ORTModelForSpeechSeq2Seq.from_pretrained(
        str(directory), provider=provider, session_options=session_options(threads, level),
        use_io_binding=io_binding, use_cache=True, use_merged=True, local_files_only=True)
    info = {"provider": provider, "io_binding": io_binding, "graph_optimization": level,
            "intra_op_num_threads": threads, "merged_decoder": bool(model.decoder.is_merged)}
    return model, info


# ---------------------------------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------------------------------


class OrtRecipe(Recipe):
    engine = "onnxruntime"
    modules = ("onnxruntime", "onnx", "optimum.onnxruntime")
    devices = ("cpu", "cuda")
    defaults = {"graph_optimization": "all"}
    fidelity_floor = 0.999  # teacher-forced top-1 agreement vs torch-fp32 required at build time
    validate_device = "cpu"

    def unavailable_reason(self, device: str) -> str | None:
        reason = super().unavailable_reason(device)
        if reason is None and device == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "onnxruntime has no CUDA execution provider (install onnxruntime-gpu)"
        return reason

    def resolve_options(self, given: dict | None) -> dict:
        opts = super().resolve_options(given)
        if opts.get("graph_optimization") not in GRAPH_OPT_LEVELS:
            raise WhisperoptError(f"recipe {self.name} option graph_optimization must be one of "
                                  f"{', '.join(GRAPH_OPT_LEVELS)}, got {opts.get('graph_optimization')!r}")
        self.check_options(opts)
        return opts

    def check_options(self, opts: dict) -> None:
        """Reject bad option values before anything is built."""

    def versions(self) -> dict:
        out = {}
        for dist in ("onnxruntime", "onnxruntime-gpu", "onnx", "optimum", "optimum-onnx"):
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return out

    # --- build ---
    def build(self, model_dir: Path, out_dir: Path, options: dict) -> dict:
        export = export_dir(model_dir)
        out_dir = Path(out_dir)
        with quiet_quantizers():
            info = self.convert(export, out_dir, options, Path(model_dir))
        copy_side_files(model_dir, out_dir)
        for name in ("config.json", "generation_config.json"):  # Optimum's copies (generation params moved there)
            if (export / name).exists():
                shutil.copy(export / name, out_dir / name)
        manifest = {"format": "onnx", "files": [p.name for p in model_files(out_dir)], "source_export": str(export),
                    **info}
        if self.validate_device is not None:
            manifest["validation"] = self.validate(out_dir, Path(model_dir), options)
        return manifest

    def convert(self, export: Path, out_dir: Path, options: dict, model_dir: Path) -> dict:
        raise NotImplementedError

    def validate(self, directory: Path, model_dir: Path, options: dict) -> dict:
        model, _ = load_ort_model(directory, self.validate_device, os.cpu_count() or 1, options["graph_optimization"])
        runtime = OrtRuntime(model, model_dir, self.validate_device, {})
        return require_fidelity(self.name, runtime, model_dir, self.fidelity_floor)

    # --- load ---
    def load(self, artifact: Artifact, device: str, threads: int):
        model, info = load_ort_model(artifact.dir, device, threads, artifact.options.get("graph_optimization", "all"))
        return OrtRuntime(model, artifact.model_dir, device, info)

    def size_bytes(self, artifact: Artifact) -> int:
        return sum(p.stat().st_size for p in model_files(artifact.dir))


class OnnxExport(OrtRecipe):
    """The plain Optimum export every ONNX recipe starts from (cached like an artifact; not a user recipe)."""

    name = "onnx-export"
    description = "Optimum ONNX export (encoder, decoder, decoder-with-past, merged decoder) shared by ONNX recipes"
    defaults = {}
    validate_device = None

    def build(self, model_dir: Path, out_dir: Path, options: dict) -> dict:
        from optimum.exporters.onnx import main_export

        try:
            main_export(str(model_dir), output=str(out_dir), task=EXPORT_TASK, do_validation=False,
                        library_name="transformers", device="cpu", local_files_only=True)
        except Exception as exc:
            raise WhisperoptError(f"ONNX export of {model_dir} failed: {type(exc).__name__}: {exc}") from exc
        missing = [f for f in (ENCODER, DECODER, DECODER_WITH_PAST, DECODER_MERGED) if not (out_dir / f).exists()]
        if missing:
            raise WhisperoptError(f"ONNX export of {model_dir} did not write {', '.join(missing)}")
        copy_side_files(model_dir, out_dir) if not (out_dir / "tokenizer.json").exists() else None
        return {"task": EXPORT_TASK}

    def load(self, artifact, device, threads):  # pragma: no cover - not a user recipe
        raise WhisperoptError("onnx-export is an intermediate artifact")


_EXPORT = OnnxExport()


def export_dir(model_dir: Path) -> Path:
    """The cached Optimum export of ``model_dir`` (built on first use)."""
    from .artifacts import build_artifact

    artifact, _ = build_artifact(_EXPORT, Path(model_dir), {})
    return artifact.dir


def _link_graph(src_dir: Path, name: str, out_dir: Path) -> None:
    _link_or_copy(src_dir / name, out_dir / name)
    for p in src_dir.iterdir():
        if p.name.startswith(name) and p.name != name and p.name.endswith(("_data", ".data")):
            _link_or_copy(p, out_dir / p.name)


class OnnxFp32(OrtRecipe):
    name = "onnx-fp32"
    description = "Optimum ONNX export (encoder + merged decoder with KV cache) in float32 on ONNX Runtime"
    fidelity_floor = 0.999

    def convert(self, export, out_dir, options, model_dir):
        for name in (ENCODER, DECODER_MERGED):
            _link_graph(export, name, out_dir)
        return {"dtype": "fp32", "quantization": None}


class OnnxFp16(OrtRecipe):
    name = "onnx-fp16"
    description = "ONNX export converted to float16 (float32 inputs/outputs), CUDA execution provider + IO binding"
    devices = ("cuda",)
    fidelity_floor = 0.95
    validate_device = "cuda"

    def convert(self, export, out_dir, options, model_dir):
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        for name in (ENCODER, DECODER_MERGED):
            model = convert_float_to_float16(onnx.load(str(export / name)), keep_io_types=True,
                                             disable_shape_infer=True)
            save_model(model, out_dir / name)
        return {"dtype": "fp16", "quantization": None, "keep_io_types": True}

    def validate(self, directory, model_dir, options):
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return {"skipped": "no CUDA execution provider at build time"}
        return super().validate(directory, model_dir, options)


DYNAMIC_OPS = ("MatMul", "Gemm", "Conv", "Gather")
STATIC_OPS = ("MatMul", "Gemm", "Conv", "Gather")


class _Int8Mixin:
    def preset(self, options: dict) -> dict:
        detected, isa = resolve_isa(options["isa"])
        p = DYNAMIC_PRESETS[isa]
        return {"isa_detected": detected, "isa": isa, "weight_type": p["weight_type"],
                "reduce_range": p["reduce_range"], "why": p["why"]}


class OnnxInt8Dynamic(_Int8Mixin, OrtRecipe):
    name = "onnx-int8-dynamic"
    description = ("ORT dynamic int8 (weights int8 at build, activations quantised per call); preset from the CPU "
                   "ISA (recorded)")
    devices = ("cpu",)
    defaults = {"graph_optimization": "all", "isa": "auto", "per_channel": False, "op_types": "MatMul",
                "lm_head": True}
    # measured on synthetic:tiny (random weights, whose near-flat logits make top-1 fragile): 0.966 on 4 dev-clean
    # utterances (0.977 on the 2 used at build) with AVX-512-VNNI, 0.791 on an AVX2-only CPU (7-bit weights); a
    # decoder with two layers swapped scores 0.000. Trained weights: the 0.90 floor of validation.py (tiny.en 1.000)
    fidelity_floor = 0.70

    def check_options(self, opts):
        resolve_isa(opts["isa"])
        parse_op_types(opts["op_types"], DYNAMIC_OPS)

    def convert(self, export, out_dir, options, model_dir):
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        preset = self.preset(options)
        ops = parse_op_types(options["op_types"], DYNAMIC_OPS)
        counts = {}
        for name in (ENCODER, DECODER_MERGED):
            model = onnx.load(str(export / name))
            exclude = prepare_lm_head(model, options["lm_head"]) if name == DECODER_MERGED else []
            quantize_dynamic(model, str(out_dir / name), op_types_to_quantize=ops, nodes_to_exclude=exclude,
                             per_channel=options["per_channel"], reduce_range=preset["reduce_range"],
                             weight_type=getattr(QuantType, preset["weight_type"]),
                             use_external_data_format=model.ByteSize() > EXTERNAL_DATA_THRESHOLD,
                             extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True})
            counts[name] = op_counts(onnx.load(str(out_dir / name), load_external_data=False))
        return {"dtype": "int8", "quantization": {
            "method": "dynamic", **preset, "per_channel": options["per_channel"], "op_types": ops,
            "lm_head_quantized": bool(options["lm_head"] and "MatMul" in ops),
            "activations": "uint8, per tensor, computed per call", "ops_after": counts}}


class CalibrationReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of input dicts (supports strided ranges)."""

    def __init__(self, samples: list[dict]):
        self.samples = samples
        self.start, self.end = 0, len(samples)
        self._it = None

    def __len__(self) -> int:
        return len(self.samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, end_index
        self._it = None

    def get_next(self):
        if self._it is None:
            self._it = iter(self.samples[self.start:self.end])
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def calibration_samples(export: Path, model_dir: Path, size: int, past_steps: int = 2, seed: int = 0) -> dict:
    """Real inputs for the encoder, decoder and decoder-with-past from ``size`` dev-clean utterances.

    Encoder: log-mel features. Decoder: the decoding prompt + reference transcript tokens (teacher forcing) with the
    fp32 encoder's states. Decoder-with-past: one next token at ``past_steps`` random positions of each transcript,
    with the KV cache the fp32 decoder produced for the tokens before it.
    """
    import onnxruntime as ort

    from ..bench.worker import _probe_inputs

    so = session_options(os.cpu_count() or 1, "all")
    enc = ort.InferenceSession(str(export / ENCODER), so, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(export / DECODER), so, providers=["CPUExecutionProvider"])
    _, heads, head_dim = _decoder_dims(model_dir)
    out_names = [o.name for o in dec.get_outputs()]
    rng = np.random.default_rng(seed)
    samples = {"encoder": [], "decoder": [], "decoder_with_past": []}
    for _uid, feats, tokens, _ in _probe_inputs(probe_job(model_dir, CALIBRATION_DATASET, size)):
        samples["encoder"].append({enc.get_inputs()[0].name: feats})
        states = enc.run(["last_hidden_state"], {enc.get_inputs()[0].name: feats})[0]
        ids = np.asarray([tokens], dtype=np.int64)
        samples["decoder"].append(decoder_feed(dec, ids, states, heads, head_dim))
        for p in sorted(rng.choice(np.arange(1, len(tokens)), size=min(past_steps, len(tokens) - 1), replace=False)):
            outs = dict(zip(out_names, dec.run(None, decoder_feed(dec, ids[:, :p], states, heads, head_dim))))
            past = {k.replace("present.", "past_key_values."): v for k, v in outs.items() if k.startswith("present.")}
            samples["decoder_with_past"].append({"input_ids": ids[:, p:p + 1], "encoder_hidden_states": states,
                                                 "past": past})
    return samples


def _with_past_feeds(export: Path, raw: list[dict], heads: int, head_dim: int) -> list[dict]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(export / DECODER_WITH_PAST), providers=["CPUExecutionProvider"])
    return [decoder_feed(sess, s["input_ids"], s["encoder_hidden_states"], heads, head_dim, past=s["past"])
            for s in raw]


class OnnxInt8Static(_Int8Mixin, OrtRecipe):
    name = "onnx-int8-static"
    description = ("ORT static int8, QDQ format, activation ranges calibrated on LibriSpeech dev-clean (encoder, "
                   "decoder and decoder-with-past on real inputs)")
    devices = ("cpu",)
    defaults = {"graph_optimization": "all", "isa": "auto", "per_channel": True, "op_types": "MatMul",
                "lm_head": True, "calibration": "auto", "calibration_size": 16, "percentile": 99.99}
    # calibration "auto": percentile ranges for the encoder, min/max for the decoders. On trained weights the input of
    # the encoder's fc2 (fc1's GELU output) has rare outliers; a per-tensor uint8 scale stretched to the max leaves the
    # rest a few levels and the encoder breaks (tiny.en, 6 dev-clean utterances: min/max everywhere WER 57 %, min/max
    # encoder + fp32 decoder 37 %, the same with the encoder's fc2 kept fp32 0.7 %, percentile-99.99 encoder 0.7 % =
    # torch-fp32; teacher forcing did not see it: 81.6 %). The decoders are the other way round: min/max decodes
    # like fp32 (0.0 % with an fp32 encoder), percentile clips the decoder's own outliers (65 % teacher-forced).
    # measured on synthetic:tiny: 0.907-0.920 (calibration 8-16 dev-clean utterances, AVX-512-VNNI); swapped layers:
    # 0.000; lowered for AVX2-only CPUs like the dynamic recipe
    fidelity_floor = 0.70

    def check_options(self, opts):
        resolve_isa(opts["isa"])
        parse_op_types(opts["op_types"], STATIC_OPS)
        if opts["calibration"] not in CALIBRATION_METHODS:
            raise WhisperoptError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, "
                                  f"got {opts['calibration']!r}")
        if opts["calibration_size"] <= 0:
            raise WhisperoptError(f"calibration_size must be positive, got {opts['calibration_size']}")
        if not 0 < float(opts["percentile"]) <= 100:
            raise WhisperoptError(f"percentile must be in (0, 100], got {opts['percentile']}")

    def convert(self, export, out_dir, options, model_dir):
        import tempfile

        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from optimum.onnx import merge_decoders

        preset = self.preset(options)
        ops = parse_op_types(options["op_types"], STATIC_OPS)
        # activations: uint8 on x86 (U8S8, what the ISA presets are for); int8 on ARM64 (S8S8, ORT's advice)
        act_type = QuantType.QInt8 if preset["isa"] == "arm64" else QuantType.QUInt8
        weight_type = getattr(QuantType, preset["weight_type"])
        methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                   "percentile": CalibrationMethod.Percentile}
        chosen = {part: options["calibration"] if options["calibration"] != "auto" else
                  ("percentile" if part == "encoder" else "minmax")
                  for part in ("encoder", "decoder", "decoder_with_past")}
        _, heads, head_dim = _decoder_dims(export)
        raw = calibration_samples(export, model_dir, options["calibration_size"])
        feeds = {"encoder": raw["encoder"], "decoder": raw["decoder"],
                 "decoder_with_past": _with_past_feeds(export, raw["decoder_with_past"], heads, head_dim)}
        # one calibration sample per ORT pass (CalibStridedMinMax=1) keeps the augmented model's intermediate outputs
        # for a single input in memory; ranges are merged across passes
        extra = {"MatMulConstBOnly": True, "CalibStridedMinMax": 1, "CalibPercentile": float(options["percentile"])}
        counts = {}
        with tempfile.TemporaryDirectory(prefix="wo-qdq-", dir=str(out_dir)) as tmp:
            tmp = Path(tmp)
            parts = {"encoder": ENCODER, "decoder": DECODER, "decoder_with_past": DECODER_WITH_PAST}
            for key, fname in parts.items():
                model = onnx.load(str(export / fname))
                exclude = prepare_lm_head(model, options["lm_head"]) if key != "encoder" else []
                big = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
                src = tmp / f"src-{fname}"
                save_model(model, src)
                del model
                dst = (out_dir / ENCODER) if key == "encoder" else (tmp / fname)
                quantize_static(str(src), str(dst), CalibrationReader(feeds[key]), quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=ops, per_channel=options["per_channel"],
                                nodes_to_exclude=exclude,
                                reduce_range=preset["reduce_range"], activation_type=act_type,
                                weight_type=weight_type, use_external_data_format=big,
                                calibrate_method=methods[chosen[key]],
                                extra_options=dict(extra))
                feeds[key] = None
            merge_decoders(str(tmp / DECODER), str(tmp / DECODER_WITH_PAST), strict=False,
                           save_path=str(out_dir / DECODER_MERGED))
        for name in (ENCODER, DECODER_MERGED):
            counts[name] = op_counts(onnx.load(str(out_dir / name), load_external_data=False))
        return {"dtype": "int8", "quantization": {
            "method": "static", "format": "QDQ", **preset, "per_channel": options["per_channel"], "op_types": ops,
            "activation_type": "int8" if act_type == QuantType.QInt8 else "uint8",
            "lm_head_quantized": bool(options["lm_head"] and "MatMul" in ops),
            "calibration": {"method": options["calibration"], "per_graph": chosen, "dataset": CALIBRATION_DATASET,
                            "utterances": options["calibration_size"],
                            "decoder_samples": len(raw["decoder"]),
                            "decoder_with_past_samples": len(raw["decoder_with_past"]),
                            **({"percentile": float(options["percentile"])}
                               if "percentile" in chosen.values() else {})},
            "ops_after": counts}}


INT4_OPS = ("MatMul", "Gather")


class OnnxInt4(OrtRecipe):
    name = "onnx-int4"
    description = "ORT weight-only 4-bit (MatMulNBits, block-wise scales); embedding via GatherBlockQuantized"
    devices = ("cpu", "cuda")
    defaults = {"graph_optimization": "all", "block_size": 32, "symmetric": True, "accuracy_level": 4,
                "op_types": "MatMul", "lm_head": True}
    # measured on synthetic:tiny: 0.35-0.44 at block 32 (0.52 at block 16): 4-bit weights move random-weight
    # logits, which are nearly tied, far more than a trained model's; swapped layers score 0.000
    fidelity_floor = 0.20

    def check_options(self, opts):
        bs = opts["block_size"]
        if bs < 16 or bs & (bs - 1):
            raise WhisperoptError(f"block_size must be a power of two >= 16, got {bs}")
        if opts["accuracy_level"] not in (0, 1, 2, 3, 4):
            raise WhisperoptError(f"accuracy_level must be 0-4, got {opts['accuracy_level']}")
        parse_op_types(opts["op_types"], INT4_OPS)

    def convert(self, export, out_dir, options, model_dir):
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        ops = parse_op_types(options["op_types"], INT4_OPS)
        counts = {}
        for name in (ENCODER, DECODER_MERGED):
            model = onnx.load(str(export / name))
            exclude = prepare_lm_head(model, options["lm_head"]) if name == DECODER_MERGED else []
            quant = MatMulNBitsQuantizer(model, bits=4, block_size=options["block_size"], nodes_to_exclude=exclude,
                                         is_symmetric=options["symmetric"],
                                         accuracy_level=options["accuracy_level"] or None,
                                         op_types_to_quantize=tuple(ops))
            quant.process()
            quant.model.save_model_to_file(str(out_dir / name),
                                           use_external_data_format=quant.model.model.ByteSize()
                                           > EXTERNAL_DATA_THRESHOLD)
            counts[name] = op_counts(onnx.load(str(out_dir / name), load_external_data=False))
        return {"dtype": "int4", "quantization": {
            "method": "weight-only", "bits": 4, "block_size": options["block_size"],
            "symmetric": options["symmetric"], "accuracy_level": options["accuracy_level"], "op_types": ops,
            "lm_head_quantized": bool(options["lm_head"] and "MatMul" in ops), "ops_after": counts}}


RECIPES = [OnnxFp32(), OnnxFp16(), OnnxInt8Dynamic(), OnnxInt8Static(), OnnxInt4()]
