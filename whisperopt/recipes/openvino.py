"""OpenVINO recipes: IR export with optimum-intel, NNCF weight compression and static INT8 PTQ, two decode loops.

Build
  * ``openvino-fp32``: ``OVModelForSpeechSeq2Seq.from_pretrained(model_dir, export=True, load_in_8bit=False)`` then
    ``save_pretrained`` (encoder IR + one stateful decoder IR, fp32 weights), the checkpoint's tokenizer/processor
    files, and the openvino-tokenizers tokenizer/detokenizer IRs that openvino-genai needs.
  * every other recipe starts from the cached ``openvino-fp32`` artifact (built first if missing) and rewrites the
    encoder and decoder IRs: ``openvino-fp16`` saves them with fp16-compressed weights; ``openvino-int8-weights`` and
    ``openvino-int4-weights`` run ``nncf.compress_weights`` (mode, group size, ratio recorded); ``openvino-int8-ptq``
    (``openvino_ptq.py``) runs ``nncf.quantize`` (static INT8 weights and activations, ``ModelType.TRANSFORMER``, SmoothQuant, fast bias
    correction) on inputs recorded from the fp32 model transcribing LibriSpeech dev-clean, the way the OpenVINO
    whisper notebooks do it: the encoder and decoder infer requests are wrapped by optimum-intel's
    ``InferRequestWrapper``, which records every input (and the stateful decoder's state resets).
  * the manifest records the weight bytes of each component (encoder / decoder ``.bin``) and its compression
    against the fp32 IR.
  * every build is checked against the baseline on 2 dev-clean utterances (``validation.validate_artifact``, probes through
    ``OVRuntime``): encoder relative error and
    teacher-forced top-1 agreement, the decoder run through its KV-cache state the way ``generate`` runs it; a build
    under the recipe's ``fidelity_floor`` fails instead of leaving a broken artifact. Floors (measured on synthetic
    tiny, 8 dev-clean + 8 test-clean utterances): fp32 99.9 %, fp16 98 %, int8-weights 85 %, int8-ptq 45 %,
    int4-weights 35 % (random-weight logits are nearly tied, so quantisation moves top-1 far more than on a trained
    model).

Run
  * ``openvino-*``: the Python decode loop, i.e. transformers' ``generate`` driving the OpenVINO encoder and decoder
    through ``OVModelForSpeechSeq2Seq`` (``GenerateRuntime``).
  * ``openvino-*-genai``: the same artifact directory (no copy) run by ``openvino_genai.WhisperPipeline``, whose
    decode loop is C++. Forced lengths (synthetic checkpoints) use ``min_new_tokens = max_new_tokens = n`` (the
    end-of-text token is masked until ``n`` tokens exist, as ``min_new_tokens`` does in transformers); every call's
    generated-token count is checked against ``n`` and a mismatch fails the run instead of producing a row.
  * ``ov_device`` (CPU; GPU/AUTO where OpenVINO sees one), ``INFERENCE_NUM_THREADS`` = ``--threads``,
    ``PERFORMANCE_HINT`` (LATENCY) and ``INFERENCE_PRECISION_HINT`` (f32 by default: OpenVINO's CPU default is bf16
    on CPUs with AVX512-BF16/AMX, which would mix a precision change into every comparison) are recipe options and
    recorded, together with the properties the compiled models report, by ``run_info()``.
  * ``run_info()`` also returns the median per-call time of the encoder and of the decoder (the Python loop times
    the OpenVINO infer requests; GenAI reports them in its perf metrics). The first ``transcribe`` call (the bench's
    warm-up) is left out.

The runtimes are in ``openvino_runtime.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..data.specs import DEV_DATASET
from ..errors import WhisperoptError
from ..files import dist_version
from .base import Artifact, Option, Recipe, Runtime
from .openvino_runtime import (
    COMPONENTS,
    GenAIRuntime,
    OVRuntime,
    check_device,
    component_bytes,
    load_ov_model,
    ov_properties,
)
from .pytorch import copy_side_files

OV_DEVICES = ("CPU", "GPU", "AUTO")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
PRECISION_HINTS = ("f32", "bf16", "f16", "default")  # "default": leave OpenVINO's device default
CALIBRATION_DATA = DEV_DATASET  # never test data


def _upper(value) -> str:
    return str(value).upper()


def _ov_device(value: str) -> str | None:
    return None if value.split(".")[0] in OV_DEVICES else f"expected one of {', '.join(OV_DEVICES)}"


# load-time settings shared by every OpenVINO recipe (recorded in the manifest like any option)
RUNTIME_OPTIONS = {"ov_device": Option("CPU", normalise=_upper, check=_ov_device),
                   "performance_hint": Option("LATENCY", PERFORMANCE_HINTS, normalise=_upper),
                   "precision_hint": Option("f32", PRECISION_HINTS)}


class OpenVINORecipe(Recipe):
    """An OpenVINO IR recipe. Every IR but the fp32 export starts from the cached ``openvino-fp32`` artifact
    (``base_recipe``); a ``genai`` recipe shares its base's artifact and runs it through openvino-genai."""

    engine = "openvino"
    modules = ("openvino", "optimum.intel", "nncf", "openvino_tokenizers")
    devices = ("cpu",)
    options = RUNTIME_OPTIONS
    genai = False
    component_baseline = "openvino-fp32"
    fidelity_floor = 0.999  # teacher-forced top-1 agreement vs the baseline on dev-clean required at build time
    ir_description = ""
    window_unsupported = None  # OVRuntime compiles a frame-dynamic copy of the encoder IR (window_encoder)

    @property
    def description(self) -> str:
        if self.genai:
            return self.ir_description + " — run by openvino-genai WhisperPipeline (C++ decode loop)"
        return self.ir_description + ", Python (transformers generate) decode loop"

    def versions(self) -> dict:
        v = {d: dist_version(d) for d in ("openvino", "openvino-tokenizers", "openvino-genai", "nncf", "optimum-intel",
                                          "optimum", "transformers", "torch")}
        return {k: val for k, val in v.items() if val}

    def base_options(self, options: dict) -> dict:
        return dict(options) if self.shares_base_weights else super().base_options(options)

    # --- build ---
    def build(self, model_dir: Path, out_dir: Path, options: dict, base: Artifact | None = None) -> dict:
        fp32_dir = base.dir
        fp32_bytes = component_bytes(fp32_dir)
        for f in fp32_dir.iterdir():  # configs, tokenizer files and tokenizer IRs travel unchanged
            if f.is_file() and f.stem not in COMPONENTS.values() and f.name != "manifest.json":
                shutil.copy(f, out_dir / f.name)
        extra = self._transform(model_dir, fp32_dir, out_dir, options) or {}
        return {**extra, "components": _components(out_dir, fp32_bytes)}

    def probe_runtime(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        """The Python-loop runtime on CPU in f32 whatever the options (the probes plus a real decode)."""
        props = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        return OVRuntime(load_ov_model(artifact.weights_dir, "CPU", props), artifact.model_dir, "CPU", props, threads)

    def _transform(self, model_dir: Path, fp32_dir: Path, out_dir: Path, options: dict) -> dict:
        raise NotImplementedError

    def _rewrite(self, fp32_dir: Path, out_dir: Path, fn, compress_to_fp16: bool = False) -> None:
        import openvino as ov

        core = ov.Core()
        for stem in COMPONENTS.values():
            model = core.read_model(str(fp32_dir / f"{stem}.xml"))
            ov.save_model(fn(stem, model), str(out_dir / f"{stem}.xml"), compress_to_fp16=compress_to_fp16)

    def size_bytes(self, artifact: Artifact) -> int:
        """Encoder + decoder weight files (the tokenizer IRs and configs are not model weights)."""
        return sum(c["bin_bytes"] for c in component_bytes(artifact.weights_dir).values())

    # --- load ---
    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        import torch

        if device != "cpu":
            raise WhisperoptError(f"{self.name} runs through OpenVINO (ov_device option), not on {device}")
        options = {**self.defaults, **artifact.options}
        ov_device = check_device(options["ov_device"])
        props = ov_properties(options, threads)
        ir_dir = artifact.weights_dir  # a -genai recipe's manifest points at its base recipe's artifact
        torch.set_num_threads(threads)
        if self.genai:
            return GenAIRuntime(ir_dir, artifact.model_dir, ov_device, props, threads)
        return OVRuntime(load_ov_model(ir_dir, ov_device, props), artifact.model_dir, ov_device, props, threads,
                         ir_dir)


def _components(ir_dir: Path, fp32_bytes: dict) -> dict:
    comps = component_bytes(ir_dir)
    for name, c in comps.items():
        c["fp32_bin_bytes"] = fp32_bytes[name]["bin_bytes"]
        c["compression"] = round(c["fp32_bin_bytes"] / c["bin_bytes"], 3)
    return comps


def convert_ov_tokenizers(model_dir: Path, out_dir: Path) -> None:
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok, detok = convert_tokenizer(hf_tok, with_detokenizer=True)
    ov.save_model(tok, str(out_dir / "openvino_tokenizer.xml"))
    ov.save_model(detok, str(out_dir / "openvino_detokenizer.xml"))


class OpenVINOFp32(OpenVINORecipe):
    name = "openvino-fp32"
    ir_description = "OpenVINO IR exported by optimum-intel, fp32 weights"

    def build(self, model_dir: Path, out_dir: Path, options: dict, base=None) -> dict:
        from optimum.intel import OVModelForSpeechSeq2Seq

        model = OVModelForSpeechSeq2Seq.from_pretrained(str(model_dir), export=True, compile=False,
                                                        load_in_8bit=False, local_files_only=True)
        model.save_pretrained(str(out_dir))
        stateful = bool(model.decoder.stateful)
        del model
        copy_side_files(model_dir, out_dir)
        convert_ov_tokenizers(model_dir, out_dir)
        comps = component_bytes(out_dir)
        return {"weights": "fp32", "stateful_decoder": stateful,
                "export": "optimum-intel OVModelForSpeechSeq2Seq.from_pretrained(export=True, load_in_8bit=False)",
                "components": _components(out_dir, comps)}


class OpenVINOFp16(OpenVINORecipe):
    name = "openvino-fp16"
    ir_description = "OpenVINO IR with fp16-compressed weights (decompressed to the inference precision at load)"
    fidelity_floor = 0.98  # measured 100 % (tiny, 8 dev-clean + 8 test-clean utterances)

    def _transform(self, model_dir, fp32_dir, out_dir, options):
        self._rewrite(fp32_dir, out_dir, lambda stem, m: m, compress_to_fp16=True)
        return {"weights": "fp16 (ov.save_model compress_to_fp16=True)"}


class OpenVINOWeightCompression(OpenVINORecipe):
    """``nncf.compress_weights`` data-free weight-only compression of the encoder and decoder IRs."""


    def _nncf_kwargs(self, options: dict) -> dict:
        import nncf

        return {"mode": nncf.CompressWeightsMode(options["mode"])}

    def _transform(self, model_dir, fp32_dir, out_dir, options):
        import nncf

        kwargs = self._nncf_kwargs(options)
        self._rewrite(fp32_dir, out_dir, lambda stem, m: nncf.compress_weights(m, **kwargs))
        recorded = {k: (v.value if hasattr(v, "value") else v) for k, v in kwargs.items()}
        return {"weights": f"nncf.compress_weights {recorded}", "nncf_compress_weights": recorded}


def _group_size(value) -> str | None:
    return None if value == -1 or value > 0 else "expected -1 (per channel) or a positive integer"


def _ratio(value) -> str | None:
    return None if 0 < value <= 1 else "expected a number in (0, 1]"


class OpenVINOInt8Weights(OpenVINOWeightCompression):
    name = "openvino-int8-weights"
    weight_bits = 8
    ir_description = "OpenVINO IR, NNCF int8 weight-only compression (per-channel), fp32 activations"
    options = {**RUNTIME_OPTIONS, "mode": Option("int8_asym", ("int8_asym", "int8_sym"))}
    fidelity_floor = 0.85  # measured 92.6 % dev-clean / 95.2 % test-clean (tiny, 8 utterances each)


class OpenVINOInt4Weights(OpenVINOWeightCompression):
    name = "openvino-int4-weights"
    weight_bits = 4
    ir_description = "OpenVINO IR, NNCF int4 weight-only compression (grouped; ratio of int4 layers, rest int8)"
    options = {**RUNTIME_OPTIONS, "mode": Option("int4_asym", ("int4_asym", "int4_sym", "nf4")),
               "group_size": Option(64, check=_group_size), "ratio": Option(1.0, check=_ratio),
               "all_layers": Option(False)}
    fidelity_floor = 0.35  # measured 50.2 % / 48.2 % (random-weight logits are nearly tied)

    def _nncf_kwargs(self, options):
        kwargs = super()._nncf_kwargs(options)
        kwargs.update(group_size=options["group_size"], ratio=options["ratio"], all_layers=options["all_layers"])
        return kwargs

    def _transform(self, model_dir, fp32_dir, out_dir, options):
        import openvino as ov

        core = ov.Core()
        for stem in COMPONENTS.values():  # every compressed matmul's input width must be a multiple of group_size
            model = core.read_model(str(fp32_dir / f"{stem}.xml"))
            g = options["group_size"]
            widths = {int(p.get_shape()[-1]) for op in model.get_ops() if op.get_type_name() == "MatMul"
                      for p in [op.input(1).get_source_output().get_node().output(0)]
                      if op.input(1).get_source_output().get_node().get_type_name() == "Constant"}
            bad = sorted(w for w in widths if g > 0 and w % g)
            if bad:
                raise WhisperoptError(f"{self.name} option group_size={g} does not divide weight widths {bad} of {stem}")
        return super()._transform(model_dir, fp32_dir, out_dir, options)


FP32 = OpenVINOFp32()
BASE_RECIPES = [FP32, OpenVINOFp16(base_recipe=FP32), OpenVINOInt8Weights(base_recipe=FP32),
                OpenVINOInt4Weights(base_recipe=FP32)]  # openvino-int8-ptq: openvino_ptq.py


def genai_twin(base: OpenVINORecipe) -> OpenVINORecipe:
    """``<base>-genai``: the same artifact (no build of its own), decoded by openvino_genai.WhisperPipeline."""
    return OpenVINORecipe(name=base.name + "-genai", ir_description=base.ir_description, options=base.options,
                          modules=base.modules + ("openvino_genai",), genai=True, base_recipe=base,
                          shares_base_weights=True, fidelity_floor=base.fidelity_floor, weight_bits=base.weight_bits,
                          compute_precision=base.compute_precision, component_baseline="openvino-fp32-genai",
                          window_unsupported=GENAI_NO_WINDOW)


GENAI_NO_WINDOW = ("openvino-genai's WhisperPipeline computes its own 30-s log-mel in C++ and has no setting for the "
                   "encoder's length (its API takes raw audio only); the Python-loop twin without -genai takes it")


RECIPES = BASE_RECIPES + [genai_twin(r) for r in BASE_RECIPES]
