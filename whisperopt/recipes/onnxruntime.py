"""ONNX Runtime recipes: Optimum export, ISA-aware dynamic int8, static QDQ int8, int4 weight-only, fp16 (CUDA).

Build
  * Every recipe starts from one Optimum export of the checkpoint (``optimum.exporters.onnx.main_export``, task
    ``automatic-speech-recognition-with-past``): encoder, decoder, decoder-with-past and the merged decoder (one
    graph, an ``If`` on ``use_cache_branch`` choosing the no-past or the with-past branch, tied embedding / output
    projection stored once). That export is itself a cached artifact (``onnx-export``, not a user recipe) shared by
    the recipes below; each recipe's artifact holds ``encoder_model.onnx`` + ``decoder_model_merged.onnx`` only.
  * ``onnx-int8-dynamic``: ``quantize_dynamic``; the preset (weight type, reduce_range) follows the CPU's ISA, read
    from /proc/cpuinfo (or the ``isa`` option), see ``DYNAMIC_PRESETS``.
  * ``onnx-int8-static`` (``onnxruntime_static.py``): calibrated QDQ decoders (dev-clean), int8 encoder with activation
    ranges computed per call by default (option ``encoder``).
  * ``onnx-int4``: ``MatMulNBitsQuantizer`` (block-wise 4-bit weights, MatMulNBits); the embedding table can go to
    GatherBlockQuantized.
  * The output projection (``proj_out``, tied to the embedding table) is the largest MatMul of the decoder. Option
    ``lm_head`` decides whether it is quantised: on, it is made a constant where an export feeds it through
    ``Transpose(embed_tokens)`` (ORT's quantisers only take constant weights); off, its node is excluded.
  * After building, every artifact is checked against the baseline on dev-clean (``validation.validate_artifact``, run by the
    artifact cache): encoder error and teacher-forced top-1 agreement; a build under the recipe's floor fails.

Shared ONNX tooling (ISA presets, graph and quantiser helpers) is in ``onnx_tools.py``, the runtime in
``onnxruntime_runtime.py``.

Run: Optimum's ``ORTModelForSpeechSeq2Seq`` (transformers' Whisper ``generate``) on ``onnxruntime`` sessions with
``intra_op_num_threads`` = the bench threads, the graph optimisation level of option ``graph_optimization``, the
CUDA execution provider and IO binding on CUDA.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..data.specs import DEV_DATASET
from ..errors import WhisperoptError
from ..files import dist_version, link_or_copy
from .base import Artifact, Option, Recipe
from .onnx_tools import (
    EXTERNAL_DATA_THRESHOLD,
    GRAPH_OPT_LEVELS,
    ISA_CHOICES,
    QUANT_OPS,
    dynamic_frame_axis,
    isa_preset,
    model_files,
    op_counts,
    op_types_check,
    parse_op_types,
    prepare_lm_head,
    quiet_quantizers,
    save_model,
)
from .onnxruntime_runtime import OrtRuntime, load_ort_model
from .pytorch import copy_side_files

ENCODER = "encoder_model.onnx"
DECODER = "decoder_model.onnx"
DECODER_WITH_PAST = "decoder_with_past_model.onnx"
DECODER_MERGED = "decoder_model_merged.onnx"
EXPORT_TASK = "automatic-speech-recognition-with-past"
CALIBRATION_DATASET = DEV_DATASET  # never test data
CALIBRATION_METHODS = ("auto", "minmax", "entropy", "percentile")  # auto: percentile encoder, min/max decoders
INT4_OPS = ("MatMul", "Gather")

GRAPH_OPTIMIZATION = Option("all", GRAPH_OPT_LEVELS)
ISA = Option("auto", ISA_CHOICES)
LM_HEAD = Option(True)


def _power_of_two_16(value) -> str | None:
    return None if value >= 16 and not value & (value - 1) else "expected a power of two >= 16"


def _percentile(value) -> str | None:
    return None if 0 < float(value) <= 100 else "expected a number in (0, 100]"


def _versions() -> dict:
    found = {d: dist_version(d) for d in ("onnxruntime", "onnxruntime-gpu", "onnx", "optimum", "optimum-onnx")}
    return {d: v for d, v in found.items() if v}


class OnnxExport(Recipe):
    """The plain Optimum export every ONNX recipe starts from (cached like an artifact; not a user recipe)."""

    name = "onnx-export"
    engine = "onnxruntime"
    description = "Optimum ONNX export (encoder, decoder, decoder-with-past, merged decoder) shared by ONNX recipes"
    modules = ("onnxruntime", "onnx", "optimum.onnxruntime")
    fidelity_floor = None  # checked through every recipe built from it

    def versions(self) -> dict:
        return _versions()

    def build(self, model_dir: Path, out_dir: Path, options: dict, base=None) -> dict:
        from optimum.exporters.onnx import main_export

        try:
            main_export(str(model_dir), output=str(out_dir), task=EXPORT_TASK, do_validation=False,
                        library_name="transformers", device="cpu", local_files_only=True)
        except Exception as exc:
            raise WhisperoptError(f"ONNX export of {model_dir} failed: {type(exc).__name__}: {exc}") from exc
        missing = [f for f in (ENCODER, DECODER, DECODER_WITH_PAST, DECODER_MERGED) if not (out_dir / f).exists()]
        if missing:
            raise WhisperoptError(f"ONNX export of {model_dir} did not write {', '.join(missing)}")
        if not (out_dir / "tokenizer.json").exists():
            copy_side_files(model_dir, out_dir)
        import onnx

        encoder = onnx.load(str(out_dir / ENCODER))
        dynamic = dynamic_frame_axis(encoder)
        if dynamic:
            save_model(encoder, out_dir / ENCODER)
        return {"task": EXPORT_TASK, "encoder_frames": "dynamic (window option)" if dynamic else "fixed 3000"}

    def load(self, artifact, device, threads):  # pragma: no cover - not a user recipe
        raise WhisperoptError("onnx-export is an intermediate artifact")


class OrtRecipe(Recipe):
    engine = "onnxruntime"
    modules = ("onnxruntime", "onnx", "optimum.onnxruntime")
    devices = ("cpu", "cuda")
    options = {"graph_optimization": GRAPH_OPTIMIZATION}
    base_recipe = OnnxExport()
    window_unsupported = None  # the export's encoder takes any frame count (onnx_tools.dynamic_frame_axis)

    def unavailable_reason(self, device: str) -> str | None:
        reason = super().unavailable_reason(device)
        if reason is None and device == "cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "onnxruntime has no CUDA execution provider (install onnxruntime-gpu)"
        return reason

    def versions(self) -> dict:
        return _versions()

    # --- build ---
    def build(self, model_dir: Path, out_dir: Path, options: dict, base: Artifact | None = None) -> dict:
        export = base.dir
        out_dir = Path(out_dir)
        with quiet_quantizers():
            info = self.convert(export, out_dir, options, Path(model_dir))
        copy_side_files(model_dir, out_dir)
        for name in ("config.json", "generation_config.json"):  # Optimum's copies (generation params moved there)
            if (export / name).exists():
                shutil.copy(export / name, out_dir / name)
        return {"format": "onnx", "files": [p.name for p in model_files(out_dir)], "source_export": str(export),
                **info}

    def convert(self, export: Path, out_dir: Path, options: dict, model_dir: Path) -> dict:
        raise NotImplementedError

    # --- load ---
    def load(self, artifact: Artifact, device: str, threads: int):
        model, info = load_ort_model(artifact.dir, device, threads, artifact.options.get("graph_optimization", "all"))
        return OrtRuntime(model, artifact.model_dir, device, info)

    def size_bytes(self, artifact: Artifact) -> int:
        return sum(p.stat().st_size for p in model_files(artifact.dir))


def _link_graph(src_dir: Path, name: str, out_dir: Path) -> None:
    link_or_copy(src_dir / name, out_dir / name)
    for p in src_dir.iterdir():
        if p.name.startswith(name) and p.name != name and p.name.endswith(("_data", ".data")):
            link_or_copy(p, out_dir / p.name)


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
    weight_bits = 16
    compute_precision = "fp16"
    description = "ONNX export converted to float16 (float32 inputs/outputs), CUDA execution provider + IO binding"
    devices = ("cuda",)
    fidelity_floor = 0.95

    def convert(self, export, out_dir, options, model_dir):
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        for name in (ENCODER, DECODER_MERGED):
            model = convert_float_to_float16(onnx.load(str(export / name)), keep_io_types=True,
                                             disable_shape_infer=True)
            save_model(model, out_dir / name)
        return {"dtype": "fp16", "quantization": None, "keep_io_types": True}



def dynamic_int8(model, dst: Path, ops: list[str], exclude: list[str], per_channel: bool, preset: dict,
                 big: bool | None = None) -> None:
    """ORT ``quantize_dynamic`` of one graph (an ``onnx.ModelProto``, or a path with ``big`` = written with external
    data): int8 weights at build, activation ranges per call, the ISA ``preset``'s weight type and reduce_range, the
    merged decoder's ``If`` subgraphs too."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if big is None:
        big = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    quantize_dynamic(model if isinstance(model, onnx.ModelProto) else str(model), str(dst), op_types_to_quantize=ops,
                     nodes_to_exclude=exclude, per_channel=per_channel, reduce_range=preset["reduce_range"],
                     weight_type=getattr(QuantType, preset["weight_type"]), use_external_data_format=big,
                     extra_options={"EnableSubgraph": True, "MatMulConstBOnly": True})


def weight_only(model, dst: Path, bits: int, block_size: int, symmetric: bool, accuracy_level: int,
                exclude: list[str], ops: list[str]) -> None:
    """ORT ``MatMulNBitsQuantizer`` of one graph (an ``onnx.ModelProto``): ``bits``-bit weights with one scale per
    ``block_size`` inputs (MatMulNBits; Gather in ``ops``: GatherBlockQuantized), the merged decoder's ``If``
    subgraphs too; ``accuracy_level`` 4 = activations int8 per block in the CPU kernel, 0 = the kernel's default."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quant = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, nodes_to_exclude=exclude,
                                 is_symmetric=symmetric, accuracy_level=accuracy_level or None,
                                 op_types_to_quantize=tuple(ops))
    quant.process()
    quant.model.save_model_to_file(str(dst), use_external_data_format=quant.model.model.ByteSize()
                                   > EXTERNAL_DATA_THRESHOLD)


class OnnxInt8Dynamic(OrtRecipe):
    name = "onnx-int8-dynamic"
    weight_bits = 8
    compute_precision = "int8"
    description = ("ORT dynamic int8 (weights int8 at build, activations quantised per call); preset from the CPU "
                   "ISA (recorded)")
    devices = ("cpu",)
    options = {"graph_optimization": GRAPH_OPTIMIZATION, "isa": ISA, "per_channel": Option(False),
               "op_types": Option("MatMul", check=op_types_check(QUANT_OPS)), "lm_head": LM_HEAD}
    # measured on synthetic:tiny (random weights, whose near-flat logits make top-1 fragile): 0.966 on 4 dev-clean
    # utterances (0.977 on the 2 used at build) with AVX-512-VNNI, 0.791 on an AVX2-only CPU (7-bit weights); a
    # decoder with two layers swapped scores 0.000. Trained weights: the 0.90 floor of validation.py (tiny.en 1.000)
    fidelity_floor = 0.70

    def convert(self, export, out_dir, options, model_dir):
        import onnx

        preset = isa_preset(options["isa"])
        ops = parse_op_types(options["op_types"])
        counts = {}
        for name in (ENCODER, DECODER_MERGED):
            model = onnx.load(str(export / name))
            exclude = prepare_lm_head(model, options["lm_head"]) if name == DECODER_MERGED else []
            dynamic_int8(model, out_dir / name, ops, exclude, options["per_channel"], preset)
            counts[name] = op_counts(onnx.load(str(out_dir / name), load_external_data=False))
        return {"dtype": "int8", "quantization": {
            "method": "dynamic", **preset, "per_channel": options["per_channel"], "op_types": ops,
            "lm_head_quantized": bool(options["lm_head"] and "MatMul" in ops),
            "activations": "uint8, per tensor, computed per call", "ops_after": counts}}


class OnnxInt4(OrtRecipe):
    name = "onnx-int4"
    weight_bits = 4
    compute_precision = "int8"  # accuracy_level 4 (the default): int8 activations
    description = "ORT weight-only 4-bit (MatMulNBits, block-wise scales); embedding via GatherBlockQuantized"
    devices = ("cpu", "cuda")
    options = {"graph_optimization": GRAPH_OPTIMIZATION, "block_size": Option(32, check=_power_of_two_16),
               "symmetric": Option(True), "accuracy_level": Option(4, (0, 1, 2, 3, 4)),
               "op_types": Option("MatMul", check=op_types_check(INT4_OPS)), "lm_head": LM_HEAD}
    # measured on synthetic:tiny: 0.35-0.44 at block 32 (0.52 at block 16): 4-bit weights move random-weight
    # logits, which are nearly tied, far more than a trained model's; swapped layers score 0.000
    fidelity_floor = 0.20

    def convert(self, export, out_dir, options, model_dir):
        import onnx

        ops = parse_op_types(options["op_types"])
        counts = {}
        for name in (ENCODER, DECODER_MERGED):
            model = onnx.load(str(export / name))
            exclude = prepare_lm_head(model, options["lm_head"]) if name == DECODER_MERGED else []
            weight_only(model, out_dir / name, 4, options["block_size"], options["symmetric"],
                        options["accuracy_level"], exclude, ops)
            counts[name] = op_counts(onnx.load(str(out_dir / name), load_external_data=False))
        return {"dtype": "int4", "quantization": {
            "method": "weight-only", "bits": 4, "block_size": options["block_size"],
            "symmetric": options["symmetric"], "accuracy_level": options["accuracy_level"], "op_types": ops,
            "lm_head_quantized": bool(options["lm_head"] and "MatMul" in ops), "ops_after": counts}}


RECIPES = [OnnxFp32(), OnnxFp16(), OnnxInt8Dynamic(), OnnxInt4()]  # onnx-int8-static: onnxruntime_static.py
