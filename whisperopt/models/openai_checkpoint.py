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
