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

import base64
import gc
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from ..data.audio import SAMPLE_RATE
from ..errors import WhisperoptError
from .base import Artifact, DecodeOptions, Recipe, Runtime, Transcription

OPSET = 13
TOKENS_FILE = "tokens.txt"
WINDOW_SAMPLES = 30 * SAMPLE_RATE


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# --- checkpoint -> openai-whisper model ---

def openai_dims(config: dict):
    from whisper.model import ModelDimensions

    return ModelDimensions(
        n_mels=config["num_mel_bins"], n_audio_ctx=config["max_source_positions"], n_audio_state=config["d_model"],
        n_audio_head=config["encoder_attention_heads"], n_audio_layer=config["encoder_layers"],
        n_vocab=config["vocab_size"], n_text_ctx=config["max_target_positions"], n_text_state=config["d_model"],
        n_text_head=config["decoder_attention_heads"], n_text_layer=config["decoder_layers"],
    )


def load_openai_model(model_dir: Path):
    """The Hugging Face checkpoint in ``model_dir`` as an openai-whisper ``Whisper`` module (float32, eval)."""
    import torch
    from safetensors import safe_open
    from whisper.model import Whisper

    from ..models.openai_checkpoint import rename_key

    config = json.loads((Path(model_dir) / "config.json").read_text())
    if config.get("model_type") != "whisper":
        raise WhisperoptError(f"{model_dir} is not a Whisper checkpoint")
    model = Whisper(openai_dims(config))
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise WhisperoptError(f"{model_dir} has no .safetensors weights to export")
    wanted = {rename_key(k): k for k in model.state_dict()}
    state = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for key in sf.keys():
                name = key if key.startswith("model.") else "model." + key
                if name in wanted:
                    state[wanted[name]] = sf.get_tensor(key).to(torch.float32)
    missing = sorted(set(wanted.values()) - set(state))
    if missing:
        raise WhisperoptError(f"{model_dir}: weights missing for the openai-whisper layout: {', '.join(missing[:4])}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def openai_tokenizer(model):
    import whisper.tokenizer

    return whisper.tokenizer.get_tokenizer(model.is_multilingual, num_languages=model.num_languages)


# --- the graphs sherpa-onnx loads ---

def _export_modules(model):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Encoder(nn.Module):
        """mel (any T <= 3000 frames) -> every decoder block's cross-attention keys and values of the encoder output.

        As sherpa-onnx's exporter does, the encoder adds only the first T/2 positional embeddings instead of
        asserting a 30-s input: sherpa-onnx feeds the audio's frames plus tail padding, not a padded 30-s window.
        """

        def __init__(self, whisper_model):
            super().__init__()
            self.encoder = whisper_model.encoder
            self.blocks = whisper_model.decoder.blocks

        def forward(self, mel):
            enc = self.encoder
            x = F.gelu(enc.conv1(mel))
            x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
            x = (x + enc.positional_embedding[: x.shape[1]]).to(x.dtype)
            for block in enc.blocks:
                x = block(x)
            audio = enc.ln_post(x)
            keys = [block.cross_attn.key(audio) for block in self.blocks]
            values = [block.cross_attn.value(audio) for block in self.blocks]
            return torch.stack(keys), torch.stack(values)

    class Decoder(nn.Module):
        """One decoding call with an explicit self-attention cache, as sherpa-onnx drives it."""

        def __init__(self, whisper_model):
            super().__init__()
            self.decoder = whisper_model.decoder

        def forward(self, tokens, self_k, self_v, cross_k, cross_v, offset):
            dec = self.decoder
            n = tokens.shape[-1]
            end = offset[0] + n
            x = dec.token_embedding(tokens) + dec.positional_embedding[offset[0]:end]
            x = x.to(cross_k[0].dtype)
            for i, block in enumerate(dec.blocks):
                h = block.attn_ln(x)
                k_cache = self_k[i, :, :end, :]
                v_cache = self_v[i, :, :end, :]
                k_cache[:, -n:, :] = block.attn.key(h)
                v_cache[:, -n:, :] = block.attn.value(h)
                wv, _ = block.attn.qkv_attention(block.attn.query(h), k_cache, v_cache, dec.mask)
                x = x + block.attn.out(wv)
                h = block.cross_attn_ln(x)
                wv, _ = block.cross_attn.qkv_attention(block.cross_attn.query(h), cross_k[i], cross_v[i])
                x = x + block.cross_attn.out(wv)
                x = x + block.mlp(block.mlp_ln(x))
                self_k[i, :, :end, :] = k_cache
                self_v[i, :, :end, :] = v_cache
            x = dec.ln(x)
            logits = (x @ torch.transpose(dec.token_embedding.weight.to(x.dtype), 0, 1)).float()
            return logits, self_k, self_v

    return Encoder(model).eval(), Decoder(model).eval()


def encoder_metadata(model, tokenizer, name: str) -> dict:
    d = model.dims
    return {
        "model_type": f"whisper-{name}", "version": "1", "maintainer": "whisperopt",
        "n_mels": d.n_mels, "n_audio_ctx": d.n_audio_ctx, "n_audio_state": d.n_audio_state,
        "n_audio_head": d.n_audio_head, "n_audio_layer": d.n_audio_layer, "n_vocab": d.n_vocab,
        "n_text_ctx": d.n_text_ctx, "n_text_state": d.n_text_state, "n_text_head": d.n_text_head,
        "n_text_layer": d.n_text_layer,
        "sot_sequence": ",".join(map(str, tokenizer.sot_sequence)),
        "all_language_tokens": ",".join(map(str, tokenizer.all_language_tokens)),
        "all_language_codes": ",".join(tokenizer.all_language_codes),
        "sot": tokenizer.sot, "sot_index": tokenizer.sot_sequence.index(tokenizer.sot), "eot": tokenizer.eot,
        "blank_id": tokenizer.encode(" ")[0], "is_multilingual": int(model.is_multilingual),
        "no_speech": tokenizer.no_speech, "non_speech_tokens": ",".join(map(str, tokenizer.non_speech_tokens)),
        "transcribe": tokenizer.transcribe, "translate": tokenizer.translate, "sot_prev": tokenizer.sot_prev,
        "sot_lm": tokenizer.sot_lm, "no_timestamps": tokenizer.no_timestamps,
    }


def add_metadata(path: Path, meta: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, str(value)
    onnx.save(model, str(path))


def write_tokens(model_dir: Path, eot: int, path: Path) -> None:
    """``<base64(bytes)> <id>`` per text token (ids below end-of-text), from the checkpoint's byte-level BPE vocab."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    tok = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items() if i < eot}
    if len(by_id) != eot:
        raise WhisperoptError(f"{model_dir}/tokenizer.json: expected {eot} text tokens, found {len(by_id)}")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(eot):
            raw = bytes(byte_of[c] for c in by_id[i])
            f.write(f"{base64.b64encode(raw).decode()} {i}\n")


def export_onnx(model_dir: Path, out_dir: Path, name: str) -> dict:
    """Write encoder.onnx, decoder.onnx and tokens.txt for ``model_dir`` into ``out_dir``."""
    import torch
    import whisper.model as wm

    model = load_openai_model(model_dir)
    tokenizer = openai_tokenizer(model)
    hf_tok = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
    hf_ids = {t["content"]: t["id"] for t in hf_tok.get("added_tokens", [])}
    for token, expected in (("<|endoftext|>", tokenizer.eot), ("<|startoftranscript|>", tokenizer.sot),
                            ("<|notimestamps|>", tokenizer.no_timestamps)):
        if hf_ids.get(token) != expected:
            raise WhisperoptError(f"{model_dir}: {token} is {hf_ids.get(token)} in tokenizer.json, {expected} in openai-whisper")
    encoder, decoder = _export_modules(model)
    d = model.dims
    mel = torch.randn(1, d.n_mels, 2 * d.n_audio_ctx)
    use_sdpa = wm.MultiHeadAttention.use_sdpa
    wm.MultiHeadAttention.use_sdpa = False  # the explicit-mask attention path exports to plain MatMul/Softmax
    try:
        with torch.no_grad():
            cross_k, cross_v = encoder(mel)
            torch.onnx.export(
                encoder, (mel,), str(out_dir / "encoder.onnx"), dynamo=False, opset_version=OPSET,
                input_names=["mel"], output_names=["n_layer_cross_k", "n_layer_cross_v"],
                dynamic_axes={"mel": {0: "n_audio", 2: "T"}, "n_layer_cross_k": {1: "n_audio", 2: "T"},
                              "n_layer_cross_v": {1: "n_audio", 2: "T"}},
            )
            cache = (d.n_text_layer, 1, d.n_text_ctx, d.n_text_state)
            self_k, self_v = torch.zeros(cache), torch.zeros(cache)
            prompt = torch.tensor([list(tokenizer.sot_sequence_including_notimestamps)])
            _, self_k, self_v = decoder(prompt, self_k, self_v, cross_k, cross_v, torch.zeros(1, dtype=torch.int64))
            offset = torch.tensor([prompt.shape[1]], dtype=torch.int64)
            torch.onnx.export(
                decoder, (torch.tensor([[tokenizer.sot]]), self_k, self_v, cross_k, cross_v, offset),
                str(out_dir / "decoder.onnx"), dynamo=False, opset_version=OPSET,
                input_names=["tokens", "in_n_layer_self_k_cache", "in_n_layer_self_v_cache", "n_layer_cross_k",
                             "n_layer_cross_v", "offset"],
                output_names=["logits", "out_n_layer_self_k_cache", "out_n_layer_self_v_cache"],
                dynamic_axes={"tokens": {0: "n_audio", 1: "n_tokens"}, "in_n_layer_self_k_cache": {1: "n_audio"},
                              "in_n_layer_self_v_cache": {1: "n_audio"}, "n_layer_cross_k": {1: "n_audio", 2: "T"},
                              "n_layer_cross_v": {1: "n_audio", 2: "T"}},
            )
    finally:
        wm.MultiHeadAttention.use_sdpa = use_sdpa
    add_metadata(out_dir / "encoder.onnx", encoder_metadata(model, tokenizer, name))
    write_tokens(model_dir, tokenizer.eot, out_dir / TOKENS_FILE)
    return {"opset": OPSET, "multilingual": bool(model.is_multilingual), "n_text_ctx": d.n_text_ctx}


def int8_preset() -> dict:
    """onnxruntime's dynamic int8 kernels differ by CPU ISA (see recipes/onnxruntime.py): the same preset applies here,
    since sherpa-onnx runs the graphs on onnxruntime."""
    from .onnxruntime import DYNAMIC_PRESETS, resolve_isa

    detected, isa = resolve_isa("auto")
    return {"isa_detected": detected, "isa": isa, **DYNAMIC_PRESETS[isa]}


def quantize_int8(src: Path, dst: Path, preset: dict) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .onnxruntime import quiet_quantizers

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
    def __init__(self, recipe: SherpaRecipe, artifact: Artifact, device: str, threads: int):
        self.recipe = recipe
        self.dir = Path(artifact.weights_dir)
        self.encoder_file = self.dir / artifact.manifest["encoder"]
        self.decoder_file = self.dir / artifact.manifest["decoder"]
        self.device = device
        self.threads = threads
        self.n_text_ctx = int(artifact.manifest.get("n_text_ctx", 448))
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
            stream.accept_waveform(SAMPLE_RATE, np.ascontiguousarray(audio[:WINDOW_SAMPLES], dtype=np.float32))
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
                "engine": f"sherpa-onnx {_version('sherpa-onnx')}",
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
                                    "front_end": "own (sherpa-onnx's C++ log-mel, from audio)"},
                "fidelity_method": "teacher-forced through onnxruntime on the artifact's own encoder/decoder graphs "
                                   "(sherpa-onnx exposes no scores); encoder error read at the encoder graph's "
                                   "ln_post output"}
        if self.not_comparable:
            info["not_comparable"] = self.not_comparable
        if self.forced:
            info["decoded_vs_forced_tokens"] = f"{self.decoded} decoded / {self.forced} forced"
        return info

    # --- fidelity probe: the same graphs, run by onnxruntime ---
    def _ort(self):
        if self._sessions is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            import onnx

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
    int8 = False
    fidelity_floor = 0.999  # teacher-forced top-1 agreement with torch-fp32 required at build time

    def versions(self) -> dict:
        return {"sherpa-onnx": _version("sherpa-onnx"), "onnx": _version("onnx"), "onnxruntime": _version("onnxruntime"),
                "torch": _version("torch"), "openai-whisper": _version("openai-whisper")}

    def build(self, model_dir: Path, out_dir: Path, options: dict) -> dict:
        name = Path(model_dir).name
        if not self.int8:
            info = export_onnx(model_dir, out_dir, name)
            info.update(encoder="encoder.onnx", decoder="decoder.onnx", tokens=TOKENS_FILE, quantization=None)
        else:
            preset = int8_preset()
            with tempfile.TemporaryDirectory(prefix="sherpa-fp32-", dir=str(out_dir.parent)) as tmp:
                tmp = Path(tmp)
                info = export_onnx(model_dir, tmp, name)
                for part in ("encoder", "decoder"):
                    quantize_int8(tmp / f"{part}.onnx", out_dir / f"{part}.int8.onnx", preset)
                shutil.copy(tmp / TOKENS_FILE, out_dir / TOKENS_FILE)
            info.update(encoder="encoder.int8.onnx", decoder="decoder.int8.onnx", tokens=TOKENS_FILE,
                        quantization={"method": "onnxruntime quantize_dynamic", "op_types": ["MatMul"], **preset})
        info["validation"] = self.validate(Artifact(self.name, Path(out_dir), Path(model_dir), info, options),
                                           Path(model_dir))
        return info

    def validate(self, artifact: Artifact, model_dir: Path) -> dict:
        """Check the graphs against torch-fp32 on dev-clean (encoder error at ln_post, teacher-forced top-1 through
        the decoder graph); below the floor the build fails. sherpa-onnx itself must load the artifact, too."""
        from .validation import require_fidelity

        runtime = self.load(artifact, "cpu", os.cpu_count() or 1)
        return require_fidelity(self.name, runtime, model_dir, self.fidelity_floor)

    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        check_encoder(Path(artifact.weights_dir) / artifact.manifest["encoder"])
        return SherpaRuntime(self, artifact, device, threads)


class SherpaFp32(SherpaRecipe):
    name = "sherpa-fp32"
    description = "sherpa-onnx Whisper recognizer, float32 ONNX encoder/decoder (greedy, CPU)"


class SherpaInt8(SherpaRecipe):
    name = "sherpa-int8"
    description = "sherpa-onnx Whisper recognizer, int8 dynamic-quantized ONNX encoder/decoder (greedy, CPU)"
    int8 = True
    fidelity_floor = 0.70  # as onnx-int8-dynamic (same onnxruntime quantizer and kernels; 0.79 on AVX2-only CPUs)


RECIPES = [SherpaFp32(), SherpaInt8()]
