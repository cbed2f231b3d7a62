"""The graphs sherpa-onnx's Whisper recognizer loads, exported the way its own script (scripts/whisper/export-onnx.py)
does: the checkpoint's weights in openai-whisper's ``Whisper`` module, two TorchScript ONNX graphs (opset 13) with the
metadata sherpa-onnx reads, and ``tokens.txt``."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from ..errors import WhisperoptError

OPSET = 13
TOKENS_FILE = "tokens.txt"


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
