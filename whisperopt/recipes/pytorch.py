"""PyTorch recipes through transformers: fp32 baseline, fp16/bf16, dynamic int8 and int8 weight-only."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import numpy as np

from ..errors import WhisperoptError, first_line
from ..files import dist_version
from ..metrics.isa import kernel_path
from .base import Artifact, Recipe
from .transformers_runtime import GenerateRuntime

# processor and tokenizer files copied next to converted weights so an artifact is a loadable model directory
MODEL_SIDE_FILES = [
    "config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "vocab.json", "merges.txt", "normalizer.json", "added_tokens.json", "special_tokens_map.json",
]


def copy_side_files(model_dir: Path, out_dir: Path) -> None:
    for name in MODEL_SIDE_FILES:
        src = Path(model_dir) / name
        if src.exists():
            shutil.copy(src, Path(out_dir) / name)


def load_state_dict_file(path: Path, allowed: tuple = ()) -> dict:
    """A state dict ``torch.save`` wrote, read data-only (``weights_only=True``): tensors, containers and the
    ``allowed`` tensor classes, nothing else. A pickle that names any other global (``os.system``, ``getattr``, ...:
    what a crafted file needs to run code) is refused in one line before anything of it runs."""
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"(?:unsupported|Unsupported global:) GLOBAL (\S+)", str(exc))
        what = f"it names {found.group(1)}" if found else "it holds more than tensors"
        raise WhisperoptError(f"{path} is not a data-only state dict ({what}); refused without running it: rebuild "
                              "the artifact, or export it again from a trusted source") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise WhisperoptError(f"{path} cannot be read as a state dict ({first_line(exc, type(exc).__name__)}); "
                              "rebuild the artifact") from None
    if not isinstance(state, dict):
        raise WhisperoptError(f"{path} is not a state dict; rebuild the artifact")
    return state


def _check_state(model, state: dict, artifact: Artifact, assign: bool = False):
    """Load ``state`` into ``model``; keys that do not match (other than the tied ``proj_out``) are one line."""
    missing, unexpected = model.load_state_dict(state, strict=False, assign=assign)
    if unexpected or [m for m in missing if not m.endswith("proj_out.weight")]:
        raise WhisperoptError(f"{artifact.dir}: quantised weights do not match the model ({missing[:3]} {unexpected[:3]})")
    return model


def _sliced_embedding(table, rows: int):
    """An nn.Embedding over the first ``rows`` rows of ``table``'s weight (shared storage, frozen)."""
    import torch

    view = torch.nn.Embedding(rows, table.embedding_dim, _weight=table.weight[:rows], _freeze=True,
                              device=table.weight.device, dtype=table.weight.dtype)
    return view


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def torch_isa_path(model, dtype) -> dict:
    """The precision and ISA path torch ran ``model``'s matrix products on (``run_info()["isa_path"]``): quantised
    Linear modules run on torch's quantized engine (fbgemm for Linear on x86: VNNI, no AMX), bf16 on oneDNN where
    torch enables it (AMX-BF16 / AVX512-BF16), fp32 on MKL/oneDNN sgemm; torch's own CPU capability is recorded."""
    import torch

    quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    precision = "int8" if quantized else {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    try:
        onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = False
    gemm = {"int8": f"quantized engine {torch.backends.quantized.engine} (fbgemm Linear kernels)",
            "bf16": "oneDNN" if onednn_bf16 else "ATen's reference kernel (no oneDNN bf16 on this CPU)",
            }.get(precision, "MKL/oneDNN")
    return kernel_path(precision, f"torch {torch.__version__}: CPU capability "
                                  f"{torch.backends.cpu.get_cpu_capability()}; GEMM {gemm}",
                       amx=precision == "bf16" and onednn_bf16)


class TorchRuntime(GenerateRuntime):
    """transformers' WhisperForConditionalGeneration, plus the encoder and teacher-forced probes."""

    word_timestamps_unsupported = None  # generate(return_token_timestamps=True): cross-attentions of alignment heads

    def encode_window(self, feats):
        """transformers' own WhisperEncoder.forward on fewer than 3000 frames: it insists on
        ``max_source_positions`` × 2 frames and adds all of its positional table, so for the call it is shown
        the table's first frames/2 rows (a view, no copy) and that many positions; the rest of the forward is
        unchanged (whisper.cpp's ``audio_ctx`` does the same slicing)."""
        from transformers.modeling_outputs import BaseModelOutput

        encoder = self.model.get_encoder()
        positions = feats.shape[-1] // (encoder.conv1.stride[0] * encoder.conv2.stride[0])
        table, config = encoder.embed_positions, encoder.config
        full = config.max_source_positions
        sliced = _sliced_embedding(table, positions)
        try:
            encoder.embed_positions, config.max_source_positions = sliced, positions
            hidden = encoder(feats).last_hidden_state
        finally:
            encoder.embed_positions, config.max_source_positions = table, full
        return BaseModelOutput(last_hidden_state=hidden)

    def run_info(self) -> dict:
        info = dict(super().run_info())
        if self.device == "cpu":
            info["isa_path"] = torch_isa_path(self.model, self.dtype)
        return info

    def encoder_output(self, features: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(features).to(self.device, dtype=self.dtype or torch.float32)
        with torch.inference_mode():
            out = self.model.model.encoder(x).last_hidden_state
        return out.float().cpu().numpy()

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray:
        import torch

        x = torch.from_numpy(features).to(self.device, dtype=self.dtype or torch.float32)
        ids = torch.tensor([tokens], device=self.device)
        with torch.inference_mode():
            logits = self.model(input_features=x, decoder_input_ids=ids, use_cache=False).logits
        return logits[0].argmax(-1).cpu().numpy()


class TorchRecipe(Recipe):
    engine = "torch"
    modules = ("torch", "transformers")
    window_unsupported = None  # TorchRuntime.encode_window
    dtype = "fp32"
    quantization: str | None = None  # None | "int8-dynamic" | "int8-weight-only"
    weights_file = ""

    def versions(self) -> dict:
        return {"torch": dist_version("torch"), "transformers": dist_version("transformers")}

    def _load_fp(self, model_dir: Path, dtype):
        from transformers import WhisperForConditionalGeneration

        return WhisperForConditionalGeneration.from_pretrained(str(model_dir), dtype=dtype, low_cpu_mem_usage=True)

    def build(self, model_dir: Path, out_dir: Path, options: dict, base=None) -> dict:
        if self.dtype == "fp32" and self.quantization is None:
            return {"weights_dir": str(model_dir)}  # the baseline runs the source checkpoint as it is
        import torch

        if self.quantization is None:
            model = self._load_fp(model_dir, _torch_dtype(self.dtype))
            model.save_pretrained(str(out_dir), safe_serialization=True)
        else:
            model = self._quantize(self._load_fp(model_dir, torch.float32), "cpu")
            torch.save(model.state_dict(), str(out_dir / self.weights_file))
        copy_side_files(model_dir, out_dir)
        return {"dtype": self.dtype, "quantization": self.quantization}

    def _quantize(self, model, device: str):
        return model

    def load(self, artifact: Artifact, device: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        dtype = _torch_dtype(self.compute_dtype(device))
        if self.quantization is None:
            model = self._load_fp(artifact.weights_dir, dtype)
        else:
            model = self._load_quantized(artifact, device)
        model = model.to(device).eval()
        return TorchRuntime(model, artifact.model_dir, device=device, dtype=dtype)

    def compute_dtype(self, device: str) -> str:
        return self.dtype

    def _load_quantized(self, artifact: Artifact, device: str):
        raise NotImplementedError


class TorchFp32(TorchRecipe):
    name = "torch-fp32"
    description = "transformers in float32: the reference every other recipe is compared with"
    baseline = True


class TorchFp16(TorchRecipe):
    name = "torch-fp16"
    weight_bits = 16
    compute_precision = "fp16"
    description = "transformers in float16 (CUDA)"
    dtype = "fp16"
    devices = ("cuda",)
    fidelity_floor = 0.95  # as the other CUDA float16 recipes (onnx-fp16, ct2-fp16)


class TorchBf16(TorchRecipe):
    name = "torch-bf16"
    weight_bits = 16
    compute_precision = "bf16"
    description = "transformers in bfloat16 (CUDA; CPU too, fast where the CPU has AVX-512-BF16/AMX)"
    dtype = "bf16"
    # build-time floors measured on synthetic:tiny (random weights: near-tied logits make top-1 fragile), 2 / 8
    # dev-clean and 8 test-clean utterances on an AVX2-only EPYC: bf16 0.977 / 0.972 / 0.982; int8-dynamic 0.907 /
    # 0.874 / 0.905; int8-weight-only 0.953 / 0.930 / 0.935. Trained weights: validation.REAL_FLOOR + decode check
    fidelity_floor = 0.90


class TorchInt8Dynamic(TorchRecipe):
    name = "torch-int8-dynamic"
    weight_bits = 8
    compute_precision = "int8"  # fbgemm int8 GEMMs (torch's x86 quantized engine)
    description = "torch.ao quantize_dynamic on every nn.Linear: int8 weights, activations quantised per batch (CPU)"
    quantization = "int8-dynamic"
    devices = ("cpu",)
    weights_file = "model_int8_dynamic.pt"
    loads_source_weights = True  # the fp32 module is built from the checkpoint, then given the int8 state
    fidelity_floor = 0.75  # measured 0.87-0.91 (see TorchBf16)

    def _quantize(self, model, device):
        import torch
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)

    def _load_quantized(self, artifact: Artifact, device: str):
        import torch

        model = self._quantize(self._load_fp(artifact.model_dir, torch.float32), device)
        return _check_state(model, load_state_dict_file(artifact.dir / self.weights_file), artifact)


class TorchInt8WeightOnly(TorchRecipe):
    name = "torch-int8-weight-only"
    weight_bits = 8
    description = "torchao int8 weight-only: int8 per-channel weights dequantised to fp32 (CPU) / fp16 (CUDA) at matmul"
    quantization = "int8-weight-only"
    modules = ("torch", "transformers", "torchao")
    weights_file = "model_int8_weight_only.pt"
    loads_source_weights = True  # as torch-int8-dynamic
    fidelity_floor = 0.85  # measured 0.93-0.95 (see TorchBf16)

    def versions(self) -> dict:
        return {**super().versions(), "torchao": dist_version("torchao")}

    def _quantize(self, model, device):
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(model, Int8WeightOnlyConfig(), device=device)
        return model

    def compute_dtype(self, device: str) -> str:
        return "fp16" if device == "cuda" else "fp32"

    def _load_quantized(self, artifact: Artifact, device: str):
        import torch

        if device == "cuda":
            return self._quantize(self._load_fp(artifact.model_dir, torch.float16).to(device), device)
        model = self._quantize(self._load_fp(artifact.model_dir, torch.float32), device)
        # data-only: torchao's Int8Tensor (int8 data, scale, zero point, block size) is the one class besides plain
        # tensors the state holds; torchao registers it as a safe global itself, listed here so no other is needed
        from torchao.quantization import Int8Tensor

        state = load_state_dict_file(artifact.dir / self.weights_file, allowed=(Int8Tensor,))
        return _check_state(model, state, artifact, assign=True)


RECIPES = [TorchFp32(), TorchFp16(), TorchBf16(), TorchInt8Dynamic(), TorchInt8WeightOnly()]
