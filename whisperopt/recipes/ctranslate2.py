"""CTranslate2 recipes, run through faster-whisper: fp32, int8, int8_float32 (CPU and CUDA), fp16, int8_float16, bf16 (CUDA).

Build: ctranslate2's ``TransformersConverter`` converts the resolved checkpoint (synthetic included) with the wanted
weight quantization and copies ``tokenizer.json`` and ``preprocessor_config.json`` next to ``model.bin``, so
faster-whisper loads the directory without touching the network.

Run: ``ct2-<type>`` transcribes each utterance with ``WhisperModel.transcribe`` (sequential); ``ct2-<type>-batched``
hands the runner's batch (``--batch-size``) to ``BatchedInferencePipeline.transcribe`` as one clip per utterance
(``batch_size`` option: clips per pipeline call, 0 = the whole runner batch). Both share one converted artifact per
compute type and map the runner's decoding options
onto faster-whisper's: same beam size, temperature 0 only (no fallback, no compression/log-prob/no-speech
thresholds), no VAD, no conditioning on previous text, fixed language and task, no timestamps, suppress_blank and
the checkpoint's suppress_tokens (``-1``) like transformers' generate. ``run_info()`` records what ran.
``ct2-int8-fw-defaults`` and ``ct2-int8-fw-batched`` are the exceptions (``ctranslate2_peers.py``): ct2-int8's artifact
through ``WhisperModel.transcribe``, and through ``BatchedInferencePipeline.transcribe`` with its Silero VAD (what
faster-whisper's README gives for long audio), with faster-whisper's own defaults and front end (only language and
task are the bench's), as its users run it; their rows say so. ``ct2-int8-fw-batched`` also transcribes whole files
with that pipeline (``Runtime.transcribe_file``): the long-form bench's faster-whisper peer row.

Forced decode length (synthetic checkpoints): ctranslate2's ``Whisper.generate`` has no ``min_length``, and it
decodes at most ``min(max_length // 2, max_length - s)`` new tokens, where ``s = len(prompt) - 1`` (the prompt
tokens fed before decoding starts). So the end-of-text token (and the timestamp tokens, which would make
faster-whisper split and re-seek the window on random weights) are added to ``suppress_tokens``, and faster-whisper's
``max_new_tokens`` is chosen so that ``len(prompt) + max_new_tokens = max(2n, n + s)``: exactly ``n`` tokens come
out. Every generate call's output is recorded and checked against ``n``. In batched mode one ``max_length`` serves
the whole batch, so every item decodes the batch's longest forced length (as torch-fp32 does with ``--batch-size``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import WhisperoptError
from ..files import dist_version
from .base import Artifact, Option, Recipe, Runtime
from .ctranslate2_peers import FWBatchedRuntime, FWDefaultsRuntime
from .ctranslate2_runtime import CT2Runtime

COPY_FILES = ["tokenizer.json", "preprocessor_config.json"]


class CT2Recipe(Recipe):
    """One ctranslate2 compute type; ``batched`` variants run the sequential recipe's artifact through
    faster-whisper's BatchedInferencePipeline."""

    engine = "ctranslate2"
    modules = ("ctranslate2", "faster_whisper")
    quantization = "float32"  # weights written by the converter, and the type requested at load
    batched = False
    faster_whisper_defaults = False  # True: WhisperModel.transcribe's own defaults (FWDefaultsRuntime)
    faster_whisper_batched = False  # True: BatchedInferencePipeline's own defaults, VAD on (FWBatchedRuntime)
    fidelity_floor = 0.999
    window_unsupported = None  # ctranslate2's encoder takes fewer frames (CT2Runtime trims faster-whisper's padding)

    @property
    def compute_type(self) -> str:
        return self.quantization

    @property
    def compute_precision(self) -> str:  # every int8_* type runs int8 GEMMs
        return {"int8": "int8", "bfloat16": "bf16", "float16": "fp16"}.get(self.quantization.split("_")[0], "fp32")

    def unavailable_reason(self, device: str) -> str | None:
        reason = super().unavailable_reason(device)
        if reason or device != "cuda":
            return reason
        import ctranslate2

        if ctranslate2.get_cuda_device_count() == 0:
            return "this ctranslate2 build sees no CUDA device"
        if self.compute_type not in ctranslate2.get_supported_compute_types("cuda"):
            return f"this GPU does not support ctranslate2 compute type {self.compute_type}"
        return None

    def versions(self) -> dict:
        return {"ctranslate2": dist_version("ctranslate2"), "faster-whisper": dist_version("faster-whisper")}

    def build(self, model_dir: Path, out_dir: Path, options: dict, base=None) -> dict:
        from ctranslate2.converters import TransformersConverter

        missing = [f for f in COPY_FILES if not (Path(model_dir) / f).exists()]
        if missing:
            raise WhisperoptError(f"{model_dir} lacks {', '.join(missing)}; faster-whisper would download them at load time")
        converter = TransformersConverter(str(model_dir), copy_files=COPY_FILES, low_cpu_mem_usage=True)
        try:
            converter.convert(str(out_dir), quantization=self.quantization, force=True)
        except (NotImplementedError, ValueError) as exc:
            raise WhisperoptError(f"ctranslate2 cannot convert {model_dir}: {exc}") from None
        return {"quantization": self.quantization, "compute_type": self.compute_type,
                "converter": "ctranslate2.converters.TransformersConverter", "copied_files": COPY_FILES}

    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        if not (Path(artifact.weights_dir) / "model.bin").is_file():
            raise WhisperoptError(f"{self.name} artifact incomplete: {artifact.weights_dir}/model.bin missing; rebuild it")
        runtime = FWBatchedRuntime if self.faster_whisper_batched else \
            FWDefaultsRuntime if self.faster_whisper_defaults else CT2Runtime
        return runtime(self, artifact, device, threads)


def _batch_size(value) -> str | None:
    return None if value >= 0 else "expected 0 (the runner's whole batch) or a positive number of clips"


# build-time floors of teacher-forced top-1 agreement (random-weight logits are nearly tied, so reduced precision moves
# top-1 more than on a trained model; measured on synthetic tiny: see tests/test_ctranslate2.py). int8: 79.1 % on the
# 2 dev-clean utterances on an AVX2-only EPYC (no VNNI: ctranslate2's AVX2 int8 GEMM), higher with AVX-512; on trained
# weights the 0.90 floor of recipes/validation.py applies (tiny.en: 100 %)
TYPES = [  # (suffix, ctranslate2 type, devices, floor, description)
    ("fp32", "float32", ("cpu", "cuda"), 0.999, "CTranslate2 float32 through faster-whisper"),
    ("int8", "int8", ("cpu", "cuda"), 0.70,
     "CTranslate2 int8 weights (other weights kept in the checkpoint's float type) through faster-whisper"),
    ("int8-fp32", "int8_float32", ("cpu", "cuda"), 0.70,
     "CTranslate2 int8_float32: int8 linear weights, float32 everything else"),
    ("fp16", "float16", ("cuda",), 0.95, "CTranslate2 float16 (CUDA)"),
    ("int8-fp16", "int8_float16", ("cuda",), 0.70,
     "CTranslate2 int8_float16: int8 linear weights, float16 everything else (CUDA)"),
    ("bf16", "bfloat16", ("cuda",), 0.80, "CTranslate2 bfloat16 (CUDA, compute capability 8.0+)"),
]


def _recipes() -> list[CT2Recipe]:
    out = []
    for suffix, ctype, devices, floor, desc in TYPES:
        bits = 8 if ctype.startswith("int8") else 16 if ctype in ("float16", "bfloat16") else 32
        seq = CT2Recipe(name=f"ct2-{suffix}", quantization=ctype, devices=devices, fidelity_floor=floor, weight_bits=bits,
                        description=desc + " (WhisperModel.transcribe, one utterance at a time)")
        batched = CT2Recipe(name=f"ct2-{suffix}-batched", quantization=ctype, devices=devices, fidelity_floor=floor,
                            weight_bits=bits,
                            batched=True,
                            base_recipe=seq, shares_base_weights=True,
                            # clips per pipeline call; 0 = the runner's whole batch (--batch-size)
                            options={"batch_size": Option(0, check=_batch_size)},
                            description=desc + " (BatchedInferencePipeline over the runner's batch)")
        out += [seq, batched]
    return out


def _fw_peers(recipes: list[CT2Recipe]) -> list[CT2Recipe]:
    """ct2-int8's artifact run the way faster-whisper's users run it (its README: int8 on CPU, default arguments;
    ``BatchedInferencePipeline`` for long audio)."""
    base = next(r for r in recipes if r.name == "ct2-int8")
    common = dict(quantization=base.quantization, devices=base.devices, fidelity_floor=base.fidelity_floor,
                  weight_bits=base.weight_bits, base_recipe=base, shares_base_weights=True,
                  window_unsupported="it runs faster-whisper exactly as its users do (its own front end and "
                                     "30-s windows); ct2-int8@window=auto is the adaptive one")
    return [CT2Recipe(name="ct2-int8-fw-defaults", faster_whisper_defaults=True, **common,
                      description="CTranslate2 int8 with faster-whisper's defaults (beam 5, temperature fallback, "
                                  "timestamps, conditioning on previous text, its own front end), not the bench's "
                                  "settings: WhisperModel.transcribe as users run it"),
            CT2Recipe(name="ct2-int8-fw-batched", faster_whisper_batched=True, **common,
                      description="CTranslate2 int8 through faster-whisper's BatchedInferencePipeline with its "
                                  "defaults (Silero VAD on, speech merged into 30-s chunks, batch 8, beam 5, no "
                                  "timestamps, its own front end), not the bench's settings: what faster-whisper "
                                  "users run on long audio (the long-form bench's peer row, mode native)")]


RECIPES = _recipes()
RECIPES += _fw_peers(RECIPES)
