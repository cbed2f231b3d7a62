"""onnxruntime-genai recipes: the genai model builder's Whisper export, run by genai's C++ decode loop.

Build
  * ``python -m onnxruntime_genai.models.builder -i <HF dir> -o <artifact> -p <precision> -e cpu`` (the builder
    supports ``WhisperForConditionalGeneration`` from a local HF directory; nothing is downloaded) writes
    ``encoder.onnx`` (conv front, encoder layers, and every decoder layer's cross-attention K/V as outputs),
    ``decoder.onnx`` (self-attention KV cache in, logits out; MultiHeadAttention / SkipLayerNormalization
    contrib ops), ``genai_config.json`` (model type ``whisper``), ``audio_processor_config.json`` (genai's C++
    log-mel) and the tokenizer files.
  * ``ortgenai-fp32``: fp32 weights. ``ortgenai-int8`` / ``ortgenai-int4``: the builder's weight-only
    ``MatMulNBits`` quantisation of every MatMul of encoder and decoder (RTN, ``block_size`` 32,
    ``accuracy_level`` 4 = int8 activations in the CPU kernel, symmetric), the options recorded in the manifest.
  * The builder 0.18 imports ``Qwen3_5ForConditionalGeneration`` / ``Qwen3_5MoeForConditionalGeneration`` from
    transformers at module level (transformers 5.x classes, used only for Qwen3.5 checkpoints). With an older
    transformers the import fails before any model is read, so the builder runs in a subprocess that binds
    placeholder classes for exactly those missing names (recorded in the manifest as ``transformers_placeholders``).

Run: ``onnxruntime_genai_runtime.GenAIRuntime`` (genai's processor and Generator; probes described there).
Floors (teacher-forced top-1 vs torch-fp32, measured on synthetic tiny) are next to each recipe.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import WhisperoptError
from ..files import dist_version
from .base import Artifact, Option, Recipe, Runtime
from .onnxruntime_genai_runtime import GenAIRuntime

# transformers names builder 0.18 imports at module level but never uses for Whisper
PLACEHOLDER_NAMES = ("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration")
_BUILDER = """
import runpy, sys, transformers
bound = [n for n in {names!r} if not hasattr(transformers, n)]
for n in bound:
    setattr(transformers, n, type(n, (), {{}}))
print("WHISPEROPT_PLACEHOLDERS=" + ",".join(bound), flush=True)
sys.argv = ["onnxruntime_genai.models.builder"] + sys.argv[1:]
runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
"""
BUILD_TIMEOUT_S = 3600
COMPONENTS = ("encoder", "decoder")


def _block_size(value) -> str | None:
    return None if value in (16, 32, 64, 128, 256) else "expected 16, 32, 64, 128 or 256"


def _accuracy_level(value) -> str | None:
    return None if value in (1, 2, 3, 4) else "expected 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8 activations)"


QUANT_OPTIONS = {"block_size": Option(32, check=_block_size), "accuracy_level": Option(4, check=_accuracy_level),
                 "is_symmetric": Option(True)}


def component_bytes(directory: Path) -> dict:
    """{component: {"onnx_bytes", "data_bytes"}} of the builder's encoder.onnx / decoder.onnx (+ .onnx.data)."""
    out = {}
    for comp in COMPONENTS:
        graph, data = directory / f"{comp}.onnx", directory / f"{comp}.onnx.data"
        out[comp] = {"onnx_bytes": graph.stat().st_size if graph.exists() else 0,
                     "data_bytes": data.stat().st_size if data.exists() else 0}
    return out


def run_builder(model_dir: Path, out_dir: Path, precision: str, extra_options: dict) -> dict:
    """Run genai's model builder on ``model_dir`` into ``out_dir``; the record of what ran (a one-line error on
    failure, with the builder's last output line)."""
    cache = Path(tempfile.mkdtemp(prefix="ortgenai-builder-"))
    args = ["-i", str(model_dir), "-o", str(out_dir), "-p", precision, "-e", "cpu", "-c", str(cache)]
    if extra_options:
        args += ["--extra_options", *[f"{k}={_flag(v)}" for k, v in extra_options.items()]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-c", _BUILDER.format(names=PLACEHOLDER_NAMES), *args], env=env,
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise WhisperoptError(f"onnxruntime-genai model builder ran over {BUILD_TIMEOUT_S} s") from None
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    lines = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()]
    if proc.returncode != 0:
        last = next((ln for ln in reversed(lines) if "Error" in ln or "Exception" in ln), lines[-1] if lines else "")
        raise WhisperoptError(f"onnxruntime-genai model builder failed (exit {proc.returncode}): {last[:300]}")
    bound = next((ln.split("=", 1)[1] for ln in proc.stdout.splitlines() if ln.startswith("WHISPEROPT_PLACEHOLDERS=")),
                 "")
    config_path = out_dir / "genai_config.json"
    if not config_path.exists() or not all((out_dir / f"{c}.onnx").exists() for c in COMPONENTS):
        raise WhisperoptError(f"onnxruntime-genai model builder wrote no Whisper model into {out_dir}")
    model_type = json.loads(config_path.read_text())["model"].get("type")
    if model_type != "whisper":
        raise WhisperoptError(f"onnxruntime-genai model builder wrote model type {model_type!r}, expected 'whisper'")
    return {"command": ["python", "-m", "onnxruntime_genai.models.builder", *args[:-2]],
            "transformers_placeholders": [n for n in bound.split(",") if n]}


def _flag(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class OrtGenAIRecipe(Recipe):
    """A genai model-builder export at one precision, run by onnxruntime-genai on CPU."""

    engine = "onnxruntime-genai"
    modules = ("onnxruntime_genai", "onnxruntime", "onnx_ir")
    devices = ("cpu",)
    options = {}
    precision = "fp32"
    component_baseline = "ortgenai-fp32"
    fidelity_floor = 0.999
    description = ""
    window_unsupported = ("onnxruntime-genai's Whisper pipeline takes raw audio: its C++ processor makes the 30-s "
                          "log-mel and its API has no setting for the encoder's length")

    def versions(self) -> dict:
        v = {d: dist_version(d) for d in ("onnxruntime-genai", "onnxruntime", "onnx-ir", "transformers", "torch")}
        return {k: val for k, val in v.items() if val}

    def build(self, model_dir: Path, out_dir: Path, options: dict, base: Artifact | None = None) -> dict:
        extra = {k: options[k] for k in QUANT_OPTIONS if k in options}
        record = run_builder(Path(model_dir), Path(out_dir), self.precision, extra)
        config = json.loads((Path(out_dir) / "genai_config.json").read_text())
        return {"weights": self.precision if not extra else f"{self.precision} (MatMulNBits weight-only, {extra})",
                "builder": {"precision": self.precision, "execution_provider": "cpu", "extra_options": extra,
                            **record},
                "genai_search_defaults": config.get("search", {}),
                "components": component_bytes(Path(out_dir))}

    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        if device != "cpu":
            raise WhisperoptError(f"{self.name} runs on CPU only (the builder's export targets the CPU provider)")
        return GenAIRuntime(artifact.weights_dir, artifact.model_dir, threads)


# floors: teacher-forced top-1 vs torch-fp32 on synthetic tiny, 2 dev-clean utterances (43 positions): fp32 100 %
# (encoder rel. error 3e-7), int8 95.3 % (5e-3), int4 39.5 % (6e-2; random-weight logits are nearly tied, as for
# onnx-int4). Trained tiny.en: 100 % for all three, decode check WER 0.67 % = torch-fp32's.
RECIPES = [
    OrtGenAIRecipe(name="ortgenai-fp32", precision="fp32", fidelity_floor=0.999,
                   description="onnxruntime-genai model builder export, fp32 — C++ decode loop and log-mel front end"),
    OrtGenAIRecipe(name="ortgenai-int8", precision="int8", weight_bits=8, compute_precision="int8", options=QUANT_OPTIONS, fidelity_floor=0.80,
                   description="onnxruntime-genai model builder export, int8 weight-only MatMulNBits (block 32) — "
                               "C++ decode loop"),
    OrtGenAIRecipe(name="ortgenai-int4", precision="int4", weight_bits=4, compute_precision="int8", options=QUANT_OPTIONS, fidelity_floor=0.20,
                   description="onnxruntime-genai model builder export, int4 weight-only MatMulNBits (block 32) — "
                               "C++ decode loop"),
]
