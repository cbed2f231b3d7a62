"""Sherpa-ONNX recipes: the encoder/decoder ONNX pair + tokens file of sherpa-onnx's Whisper recognizer, fp32 and int8.

Build follows sherpa-onnx's own exporter (scripts/whisper/export-onnx.py): the checkpoint's weights are loaded into
openai-whisper's ``whisper.model.Whisper`` and two graphs are exported with the TorchScript ONNX exporter, opset 13:

* encoder ``mel (n_audio, n_mels, T <= 3000) -> n_layer_cross_k, n_layer_cross_v (n_text_layer, n_audio, T/2, d)``
  (the encoder followed by every decoder block's cross-attention key/value projection; like the current script, no
  30-s constraint: sherpa-onnx feeds the utterance's frames plus 1000 frames of tail padding), carrying the metadata
  sherpa-onnx reads (dims, sot_sequence, language tokens and codes, eot, no_timestamps, ...);
* decoder ``tokens, in_n_layer_self_k_cache, in_n_layer_self_v_cache, n_layer_cross_k, n_layer_cross_v, offset ->
  logits, out_n_layer_self_k_cache, out_n_layer_self_v_cache``;
* ``tokens.txt``: ``<base64 of the token's bytes> <id>`` for every text token, from the checkpoint's tokenizer.

``sherpa-int8`` quantizes both graphs with onnxruntime's ``quantize_dynamic`` (MatMul weights, QInt8), as the
script does. Runtime: ``sherpa_onnx.OfflineRecognizer.from_whisper``.

Decoding: sherpa-onnx's Whisper decoder is greedy only, stops at end-of-text or after 6 tokens per second of audio
(at most n_text_ctx/2), applies no suppress_tokens / suppress_blank and offers no way to force a decode length. So
rows of synthetic checkpoints decode what sherpa decodes and are marked not comparable, and so are runs with
``--beam-size`` > 1. Fidelity: sherpa-onnx exposes no scores, so the teacher-forced probe runs the artifact's own
decoder graph through onnxruntime (the runtime sherpa-onnx embeds); the encoder graph returns cross-attention
keys/values, not the encoder's hidden states, so the encoder error is not available.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import numpy as np

from ..constants import N_SAMPLES, N_TEXT_CTX, SAMPLE_RATE
from ..errors import WhisperoptError
from ..files import dist_version
from .base import Artifact, DecodeOptions, Recipe, Runtime, Transcription
from .onnx_tools import isa_preset, quiet_quantizers, session_options
from .sherpa_export import TOKENS_FILE, export_onnx


def quantize_int8(src: Path, dst: Path, preset: dict) -> None:
    """onnxruntime's dynamic int8 (MatMul weights) with the preset of this CPU's ISA (``onnx_tools``), since
    sherpa-onnx runs the graphs on onnxruntime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_quantizers():
        quantize_dynamic(model_input=str(src), model_output=str(dst), op_types_to_quantize=["MatMul"],
                         weight_type=getattr(QuantType, preset["weight_type"]), reduce_range=preset["reduce_range"])


ENCODER_STATES = "/ln_post/"  # node-name prefix of the encoder's final LayerNorm in the exported graph


def encoder_states_name(model) -> str:
    """The tensor holding the encoder's hidden states (ln_post's output) inside an exported (or quantized) encoder."""
    outputs = [n.output[0] for n in model.graph.node
               if n.name.startswith(ENCODER_STATES) and n.op_type not in ("DynamicQuantizeLinear", "Constant")]
    if not outputs:
        raise WhisperoptError("the sherpa encoder graph has no ln_post node; cannot read its hidden states")
    return outputs[-1]


def check_encoder(path: Path) -> None:
    """sherpa-onnx >= 1.10 feeds the encoder a variable number of frames and answers an empty transcript (it only
    logs the error) when the graph wants exactly 3000: refuse such an artifact instead of measuring nothing."""
    import onnx

    if not path.exists():
        raise WhisperoptError(f"sherpa artifact incomplete: {path} missing")
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim if graph.input else []
    if graph.input[0].name != "mel" or len(dims) != 3 or not dims[2].dim_param:
        raise WhisperoptError(f"{path} is not a sherpa-onnx Whisper encoder with a variable-length mel input; rebuild it")


# --- runtime ---

class SherpaRuntime(Runtime):
    fidelity_method = ("teacher-forced through onnxruntime on the artifact's own encoder/decoder graphs (sherpa-onnx "
                       "exposes no scores); encoder error read at the encoder graph's ln_post output")

    def __init__(self, recipe: SherpaRecipe, artifact: Artifact, device: str, threads: int):
        self.recipe = recipe
        self.dir = Path(artifact.weights_dir)
        self.encoder_file = self.dir / artifact.manifest["encoder"]
        self.decoder_file = self.dir / artifact.manifest["decoder"]
        self.device = device
        self.threads = threads
        self.n_text_ctx = int(artifact.manifest.get("n_text_ctx", N_TEXT_CTX))
        self.config: tuple | None = None
        self.recognizer = None
        self._make(DecodeOptions())  # the runner's defaults; rebuilt by transcribe() if the options differ
        self.settings: dict = {}
        self.not_comparable: str | None = None
        self.decoded = self.forced = 0
        self._sessions = None

    def _make(self, options: DecodeOptions) -> None:
        import sherpa_onnx

        config = (options.language or "", options.task)
        if config == self.config:
            return
        self.recognizer = None
        gc.collect()
        self.recognizer = sherpa_onnx.OfflineRecognizer.from_whisper(
            encoder=str(self.encoder_file), decoder=str(self.decoder_file), tokens=str(self.dir / TOKENS_FILE),
            language=config[0], task=config[1], num_threads=self.threads, decoding_method="greedy_search",
            provider="cpu",
        )
        self.config = config

    def transcribe(self, audios, options, forced_lengths=None):
        self._make(options)
        reasons = []
        if options.beam_size != 1:
            reasons.append(f"sherpa-onnx's Whisper decoder is greedy only (runner beam size {options.beam_size})")
        if forced_lengths:
            reasons.append("sherpa-onnx cannot force a decode length: it stops at end-of-text or after 6 tokens "
                           "per second of audio, so on random weights it decodes a different number of tokens "
                           "than the reference transcript's")
        if options.max_new_tokens and not forced_lengths:
            reasons.append("sherpa-onnx has no max_new_tokens (its limit: 6 tokens per second of audio)")
        if reasons and not self.not_comparable:
            self.not_comparable = "; ".join(reasons)
        streams = []
        for audio in audios:
            stream = self.recognizer.create_stream()
            stream.accept_waveform(SAMPLE_RATE, np.ascontiguousarray(audio[:N_SAMPLES], dtype=np.float32))
            streams.append(stream)
        self.recognizer.decode_streams(streams)
        out = []
        for stream in streams:
            result = stream.result
            tokens = list(getattr(result, "token_ids", None) or result.tokens)
            out.append(Transcription(result.text.strip(), tokens))
        self.decoded += sum(len(t.tokens) for t in out)
        self.forced += sum(forced_lengths) if forced_lengths else 0
        if not self.settings:
            self.settings = {
                "engine": f"sherpa-onnx {dist_version('sherpa-onnx')}",
                "api": "OfflineRecognizer.from_whisper + decode_streams",
                "provider": "cpu", "num_threads": self.threads, "decoding_method": "greedy_search",
                "language": options.language or "(detected)", "task": options.task, "timestamps": "none",
                "suppress_tokens": "none (sherpa-onnx applies no suppression)",
                "max_tokens": f"6 per second of audio, at most {self.n_text_ctx // 2}",
                "encoder_input": "the utterance's frames + 1000 frames of tail padding (no 30-s window)",
                "tokens": "counted from the result's token pieces (sherpa-onnx returns no ids)",
                "encoder": self.encoder_file.name, "decoder": self.decoder_file.name,
            }
        return out

    def run_info(self) -> dict:
        info = {"decode_settings": {**(self.settings or {}),
                                    "front_end": "own (sherpa-onnx's C++ log-mel, from audio)"}}
        if self.not_comparable:
            info["not_comparable"] = self.not_comparable
        if self.forced:
            info["decoded_vs_forced_tokens"] = f"{self.decoded} decoded / {self.forced} forced"
        return info

    # --- fidelity probe: the same graphs, run by onnxruntime ---
    def _ort(self):
        if self._sessions is None:
            import onnx
            import onnxruntime as ort

            opts = session_options(self.threads)

            # the artifact's encoder, with its hidden states (ln_post's output) exposed as a third graph output
            enc = onnx.load(str(self.encoder_file))
            self._states = encoder_states_name(enc)
            enc.graph.output.append(onnx.helper.make_empty_tensor_value_info(self._states))
            self._sessions = (ort.InferenceSession(enc.SerializeToString(), opts, providers=["CPUExecutionProvider"]),
                              ort.InferenceSession(str(self.decoder_file), opts, providers=["CPUExecutionProvider"]))
        return self._sessions

    def encoder_output(self, features: np.ndarray) -> np.ndarray:
        encoder, _ = self._ort()
        return encoder.run([self._states], {"mel": np.ascontiguousarray(features, dtype=np.float32)})[0]

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray:
        encoder, decoder = self._ort()
        cross_k, cross_v = encoder.run(["n_layer_cross_k", "n_layer_cross_v"], {"mel": np.ascontiguousarray(features, dtype=np.float32)})
        layers, _, _, state = cross_k.shape
        cache = np.zeros((layers, 1, self.n_text_ctx, state), dtype=np.float32)
        logits = decoder.run(["logits"], {
            "tokens": np.asarray([tokens], dtype=np.int64), "in_n_layer_self_k_cache": cache,
            "in_n_layer_self_v_cache": cache.copy(), "n_layer_cross_k": cross_k, "n_layer_cross_v": cross_v,
            "offset": np.zeros(1, dtype=np.int64)})[0]
        return logits[0].argmax(-1)

    def close(self) -> None:
        self.recognizer = None
        self._sessions = None
        gc.collect()


class SherpaRecipe(Recipe):
    engine = "sherpa-onnx"
    modules = ("sherpa_onnx", "onnx", "onnxruntime", "whisper", "torch")
    devices = ("cpu",)  # the PyPI wheel is CPU-only
    window_unsupported = ("sherpa-onnx chooses the encoder's length itself: its C++ recognizer already encodes the "
                          "clip's own frames plus 1000 frames of tail padding, not a 30-s window, with no setting")

    def versions(self) -> dict:
        return {d: dist_version(d) for d in ("sherpa-onnx", "onnx", "onnxruntime", "torch", "openai-whisper")}

    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        check_encoder(Path(artifact.weights_dir) / artifact.manifest["encoder"])
        return SherpaRuntime(self, artifact, device, threads)


class SherpaFp32(SherpaRecipe):
    name = "sherpa-fp32"
    description = "sherpa-onnx Whisper recognizer, float32 ONNX encoder/decoder (greedy, CPU)"

    def build(self, model_dir: Path, out_dir: Path, options: dict, base=None) -> dict:
        info = export_onnx(model_dir, out_dir, Path(model_dir).name)
        return {**info, "encoder": "encoder.onnx", "decoder": "decoder.onnx", "tokens": TOKENS_FILE,
                "quantization": None}


class SherpaInt8(SherpaRecipe):
    name = "sherpa-int8"
    weight_bits = 8
    compute_precision = "int8"
    description = "sherpa-onnx Whisper recognizer, int8 dynamic-quantized ONNX encoder/decoder (greedy, CPU)"
    base_recipe = SherpaFp32()  # quantises the fp32 export, as sherpa-onnx's script does
    fidelity_floor = 0.70  # as onnx-int8-dynamic (same onnxruntime quantizer and kernels; 0.79 on AVX2-only CPUs)

    def build(self, model_dir: Path, out_dir: Path, options: dict, base: Artifact | None = None) -> dict:
        preset = isa_preset("auto")
        for part in ("encoder", "decoder"):
            quantize_int8(base.dir / base.manifest[part], out_dir / f"{part}.int8.onnx", preset)
        shutil.copy(base.dir / TOKENS_FILE, out_dir / TOKENS_FILE)
        return {**{k: base.manifest[k] for k in ("opset", "multilingual", "n_text_ctx")},
                "encoder": "encoder.int8.onnx", "decoder": "decoder.int8.onnx", "tokens": TOKENS_FILE,
                "quantization": {"method": "onnxruntime quantize_dynamic", "op_types": ["MatMul"], **preset}}


RECIPES = [SherpaFp32(), SherpaInt8()]
