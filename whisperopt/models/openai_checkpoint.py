"""Convert an openai-whisper ``.pt`` checkpoint into a Hugging Face Whisper directory."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import WhisperoptError
from ..files import atomic_dir
from .sizes import ModelDims

# openai-whisper parameter-name fragments -> transformers names (applied in order)
_RENAMES = [
    ("blocks", "layers"),
    ("mlp.0", "fc1"),
    ("mlp.2", "fc2"),
    ("mlp_ln", "final_layer_norm"),
    (".attn.query", ".self_attn.q_proj"),
    (".attn.key", ".self_attn.k_proj"),
    (".attn.value", ".self_attn.v_proj"),
    (".attn_ln", ".self_attn_layer_norm"),
    (".attn.out", ".self_attn.out_proj"),
    (".cross_attn.query", ".encoder_attn.q_proj"),
    (".cross_attn.key", ".encoder_attn.k_proj"),
    (".cross_attn.value", ".encoder_attn.v_proj"),
    (".cross_attn_ln", ".encoder_attn_layer_norm"),
    (".cross_attn.out", ".encoder_attn.out_proj"),
    ("decoder.ln.", "decoder.layer_norm."),
    ("encoder.ln_post.", "encoder.layer_norm."),
    ("token_embedding", "embed_tokens"),
    ("encoder.positional_embedding", "encoder.embed_positions.weight"),
    ("decoder.positional_embedding", "decoder.embed_positions.weight"),
]


def rename_key(key: str) -> str:
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return "model." + key


def dims_from_openai(d: dict) -> ModelDims:
    n_vocab = int(d["n_vocab"])
    english_only = n_vocab == 51864
    num_languages = n_vocab - 51765 - (0 if english_only else 1)
    if d["n_audio_state"] != d["n_text_state"] or d["n_audio_head"] != d["n_text_head"]:
        raise WhisperoptError("unsupported openai-whisper checkpoint: encoder and decoder widths differ")
    return ModelDims(
        name="openai-checkpoint",
        d_model=int(d["n_audio_state"]),
        heads=int(d["n_audio_head"]),
        encoder_layers=int(d["n_audio_layer"]),
        decoder_layers=int(d["n_text_layer"]),
        n_mels=int(d["n_mels"]),
        num_languages=num_languages,
        english_only=english_only,
    )


def convert_openai_checkpoint(pt: Path, target: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from .synthetic import generation_config, write_model_files

    try:
        ckpt = torch.load(str(pt), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WhisperoptError(f"cannot read {pt} as an openai-whisper checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise WhisperoptError(f"{pt} is not an openai-whisper checkpoint (no 'dims' / 'model_state_dict')")
    dims = dims_from_openai(ckpt["dims"])
    state = {rename_key(k): v.to(torch.float32).contiguous() for k, v in ckpt["model_state_dict"].items()}
    with atomic_dir(target) as tmp:
        write_model_files(tmp, dims, generation_config(dims))
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "whisperopt_source.json").write_text(json.dumps({"converted_from": str(pt.resolve())}))


# --- the reverse: a Hugging Face Whisper directory -> openai-whisper's .pt (the openai-whisper recipe's artifact) ---
_REVERSED = [(new, old) for old, new in reversed(_RENAMES)]
TIED_KEYS = {"proj_out.weight"}  # transformers' output projection, tied to the token embedding (openai has none)


def openai_key(hf_key: str) -> str:
    """The openai-whisper name of a transformers parameter (``rename_key``'s inverse)."""
    if not hf_key.startswith("model."):
        raise WhisperoptError(f"unexpected Whisper parameter {hf_key!r} (expected a 'model.' prefix)")
    key = hf_key[len("model."):]
    for new, old in _REVERSED:
        key = key.replace(new, old)
    return key


def dims_to_openai(config: dict) -> dict:
    """openai-whisper's ``ModelDimensions`` fields from a transformers ``config.json``."""
    try:
        if config["encoder_attention_heads"] != config["decoder_attention_heads"]:
            raise WhisperoptError("unsupported Whisper config: encoder and decoder head counts differ")
        return {
            "n_mels": int(config["num_mel_bins"]),
            "n_audio_ctx": int(config["max_source_positions"]),
            "n_audio_state": int(config["d_model"]),
            "n_audio_head": int(config["encoder_attention_heads"]),
            "n_audio_layer": int(config["encoder_layers"]),
            "n_vocab": int(config["vocab_size"]),
            "n_text_ctx": int(config["max_target_positions"]),
            "n_text_state": int(config["d_model"]),
            "n_text_head": int(config["decoder_attention_heads"]),
            "n_text_layer": int(config["decoder_layers"]),
        }
    except KeyError as exc:
        raise WhisperoptError(f"Whisper config.json lacks {exc.args[0]!r}") from None


def hf_state_dict(model_dir: Path) -> dict:
    """The float32 transformers state dict of a Whisper directory (single safetensors file, or any format
    transformers loads), without the tied output projection."""
    import torch

    model_dir = Path(model_dir)
    single = model_dir / "model.safetensors"
    if single.is_file():
        from safetensors.torch import load_file

        try:
            state = load_file(str(single))
        except Exception as exc:  # noqa: BLE001 - safetensors' SafetensorError: a torn or foreign file
            raise WhisperoptError(f"cannot read {single}: {exc}") from None
    else:
        from transformers import WhisperForConditionalGeneration

        try:
            model = WhisperForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise WhisperoptError(f"cannot load {model_dir} as a Whisper checkpoint: {exc}") from None
        state = model.state_dict()
    return {k: v.to(torch.float32).contiguous() for k, v in state.items() if k not in TIED_KEYS}


def openai_checkpoint(model_dir: Path) -> dict:
    """``{"dims": ModelDimensions fields, "model_state_dict": ...}``: what ``whisper.load_model`` reads."""
    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise WhisperoptError(f"cannot read {model_dir / 'config.json'}: {exc}") from None
    dims = dims_to_openai(config)
    state = {openai_key(k): v for k, v in hf_state_dict(model_dir).items()}
    return {"dims": dims, "model_state_dict": state}


def write_openai_checkpoint(model_dir: Path, pt: Path) -> dict:
    """Write ``model_dir`` (a transformers Whisper directory) as an openai-whisper ``.pt`` file; returns its dims."""
    import torch

    ckpt = openai_checkpoint(model_dir)
    torch.save(ckpt, str(pt))
    return ckpt["dims"]
