"""ONNX tooling shared by the engines that run ONNX graphs on onnxruntime (the ONNX Runtime recipes, sherpa-onnx):
the CPU ISA and the dynamic-quantisation preset that fits it, graph helpers for the quantisers, decoder feeds and
session options."""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import WhisperoptError
from ..metrics import isa
from .base import group_names, groups_check

EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf's 2 GB limit: larger graphs keep their weights in a side file
GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
QUANT_OPS = ("MatMul", "Gemm", "Conv", "Gather")  # op types the dynamic and static int8 quantisers may take

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
    return isa.cpu_flags()  # one home for /proc/cpuinfo: metrics/isa.py


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
    """(detected ISA, ISA whose preset is used); ``option`` is one of ISA_CHOICES."""
    detected = detect_isa()
    return detected, (detected if option == "auto" else option)


def isa_preset(option: str) -> dict:
    """The dynamic-quantisation preset for ISA ``option`` ("auto": this CPU's), with what was detected."""
    detected, isa = resolve_isa(option)
    p = DYNAMIC_PRESETS[isa]
    return {"isa_detected": detected, "isa": isa, "weight_type": p["weight_type"], "reduce_range": p["reduce_range"],
            "why": p["why"]}


def parse_op_types(text: str) -> list[str]:
    """``"MatMul,Gather"`` (or ``MatMul+Gather``) as a list of op types."""
    return [o.strip() for o in str(text).replace("+", ",").split(",") if o.strip()]


def op_types_check(allowed: tuple[str, ...]):
    """An ``Option.check`` for an op-type list drawn from ``allowed``."""

    def check(text) -> str | None:
        ops = parse_op_types(text)
        if not ops or any(o not in allowed for o in ops):
            return f"expected a comma-separated subset of {', '.join(allowed)}"
        return None

    return check


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


# layer groups a static int8 recipe can keep in float: MatMul node-name patterns of the Optimum Whisper export, per
# graph ("encoder" or "decoder": the decoders' node names are prefixed /model/decoder/)
FLOAT_LAYER_GROUPS = {
    "cross_kv": ("decoder", re.compile(r"/encoder_attn/[kv]_proj/MatMul$")),  # runs once per utterance
    "encoder_fc2": ("encoder", re.compile(r"/fc2/MatMul$")),
    "encoder_fc1": ("encoder", re.compile(r"/fc1/MatMul$")),
    "encoder_qkv": ("encoder", re.compile(r"/self_attn/[qkv]_proj/MatMul$")),
    "encoder_out": ("encoder", re.compile(r"/self_attn/out_proj/MatMul$")),
    "decoder_fc2": ("decoder", re.compile(r"/fc2/MatMul$")),
}


float_layers_check = groups_check(FLOAT_LAYER_GROUPS)  # option float_layers of onnx-int8-static


def float_layer_nodes(model, graph: str, value: str) -> list[str]:
    """MatMul nodes of ``model`` (the ``graph`` part: encoder or decoder) that option value ``value`` keeps in float."""
    patterns = [FLOAT_LAYER_GROUPS[n][1] for n in group_names(value) if FLOAT_LAYER_GROUPS[n][0] == graph]
    return [n.name for g in iter_graphs(model.graph) for n in g.node
            if n.op_type == "MatMul" and any(p.search(n.name) for p in patterns)]


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


def fits_in_memory(model) -> bool:
    """True when a graph is one protobuf under the external-data threshold (checker and shape inference take it)."""
    return _serialisable(model) and model.ByteSize() < EXTERNAL_DATA_THRESHOLD


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


def decoder_dims(model_dir: Path) -> tuple[int, int, int]:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    heads = cfg["decoder_attention_heads"]
    return cfg["decoder_layers"], heads, cfg["d_model"] // heads


NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
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
        name, dtype = inp.name, NP_TYPES.get(inp.type, np.float32)
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


def session_options(threads: int, level: str = "all"):
    """onnxruntime session options: ``threads`` intra-op threads, one inter-op, sequential, graph optimisation
    ``level`` (one of GRAPH_OPT_LEVELS, checked with the recipe's options)."""
    import onnxruntime as ort

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


# --- the adaptive encoder window on an exported encoder (recipe option ``window``) ---
def dynamic_frame_axis(model) -> bool:
    """Let an exported Whisper encoder take fewer than 3000 frames, in place: Optimum exports the frame axis fixed
    (its WhisperOnnxConfig drops the dynamic axis) and the trace adds the whole (1500, d) positional table as a
    constant. The table is sliced to the conv output's length (Shape → Slice, as whisper.cpp's ``audio_ctx`` does)
    and the input's frame axis and the output's position axis are made symbolic. False (graph unchanged) when the
    graph has no such addition, e.g. an export of another layout."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    tables = {i.name: i for i in graph.initializer if len(i.dims) == 2}
    target = next((n for n in graph.node if n.op_type == "Add" and len(n.input) == 2 and n.input[1] in tables), None)
    inp, out = graph.input[0].type.tensor_type.shape, graph.output[0].type.tensor_type.shape
    if target is None or len(inp.dim) != 3 or len(out.dim) != 3 or out.dim[1].dim_value != tables[target.input[1]].dims[0]:
        return False
    prefix = "whisperopt_window_"
    graph.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), prefix + "start"),
                              numpy_helper.from_array(np.array([0], np.int64), prefix + "axis")])
    at = list(graph.node).index(target)
    graph.node.insert(at, helper.make_node("Slice", [target.input[1], prefix + "start", prefix + "length",
                                                     prefix + "axis"], [prefix + "table"], name=prefix + "slice"))
    graph.node.insert(at, helper.make_node("Shape", [target.input[0]], [prefix + "length"], name=prefix + "shape",
                                           start=1, end=2))
    target.input[1] = prefix + "table"
    for dim, name in ((inp.dim[2], "encoder_frames"), (out.dim[1], "encoder_positions")):
        dim.ClearField("dim_value")
        dim.dim_param = name
    del graph.value_info[:]  # shapes inferred for 3000 frames no longer hold
    if fits_in_memory(model):
        onnx.checker.check_model(model)
    return True


def takes_short_windows(session) -> bool:
    """True when an encoder session's input has a symbolic frame axis (``dynamic_frame_axis`` ran at export)."""
    shape = session.get_inputs()[0].shape
    return len(shape) == 3 and not isinstance(shape[2], int)
