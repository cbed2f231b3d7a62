"""``synthetic:<size>``: the exact Whisper architecture of a published size with seeded random weights.

The result is an ordinary Hugging Face model directory (config, generation_config, preprocessor_config, tokenizer
files, safetensors) that loads through the same code path as a downloaded checkpoint. Speed, memory and size
measured on it are real; recognition accuracy is not (it decodes noise), which ``SYNTHETIC_MARKER`` records.

Weights are generated tensor by tensor into safetensors shards, so building ``large-v3`` needs about one shard of
RAM, not twice the model.
"""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import numpy as np

from ..cache import models_dir
from ..files import atomic_dir
from .sizes import ModelDims, get_dims
from .tokenizer import CONTROL_TOKENS, build_tokenizer, languages

SYNTHETIC_MARKER = "whisperopt_synthetic.json"
SEED = 1234
SHARD_BYTES = 2 * 1024**3  # like the hub's sharded checkpoints
FORMAT_VERSION = 1


def token_ids(dims: ModelDims) -> dict:
    """The special-token ids of a real checkpoint of this size."""
    eot = 50256 if dims.english_only else 50257
    sot = eot + 1
    langs = languages(dims.num_languages)
    lang_to_id = {f"<|{lang}|>": sot + 1 + i for i, lang in enumerate(langs)}
    after = sot + 1 + len(langs)
    control = {tok: after + i for i, tok in enumerate(CONTROL_TOKENS)}
    return {"eot": eot, "sot": sot, "lang_to_id": lang_to_id, **control}


def suppress_tokens(dims: ModelDims) -> list[int]:
    """openai-whisper's non-speech tokens plus the task/control tokens it suppresses, as the hub configs list."""
    import whisper.tokenizer as wt

    tok = wt.get_tokenizer(not dims.english_only, num_languages=dims.num_languages)
    ids = token_ids(dims)
    extra = [ids["sot"], ids["<|translate|>"], ids["<|transcribe|>"], ids["<|startoflm|>"], ids["<|startofprev|>"],
             ids["<|nospeech|>"]]
    return sorted(set(tok.non_speech_tokens) | set(extra))


def alignment_heads(dims: ModelDims) -> list[list[int]]:
    """Cross-attention heads used for word timestamps, from openai-whisper's table where it has one."""
    import whisper

    key = dims.alignment_key
    if key and key in whisper._ALIGNMENT_HEADS:
        raw = gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS[key]))
        mask = np.frombuffer(raw, dtype=bool).reshape(dims.decoder_layers, dims.heads)
        return [[int(layer), int(head)] for layer, head in zip(*np.nonzero(mask))]
    # fall back to the upper half of the decoder's heads, as transformers does
    return [[layer, head] for layer in range(dims.decoder_layers // 2, dims.decoder_layers) for head in range(dims.heads)]


def whisper_config(dims: ModelDims):
    from transformers import WhisperConfig

    ids = token_ids(dims)
    return WhisperConfig(
        vocab_size=dims.vocab_size,
        num_mel_bins=dims.n_mels,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        encoder_attention_heads=dims.heads,
        decoder_layers=dims.decoder_layers,
        decoder_attention_heads=dims.heads,
        encoder_ffn_dim=dims.ffn_dim,
        decoder_ffn_dim=dims.ffn_dim,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=ids["eot"],
        bos_token_id=ids["eot"],
        eos_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
        architectures=["WhisperForConditionalGeneration"],
        torch_dtype="float32",
        use_cache=True,
    )


def generation_config(dims: ModelDims) -> dict:
    ids = token_ids(dims)
    cfg = {
        "alignment_heads": alignment_heads(dims),
        "begin_suppress_tokens": [220, ids["eot"]],
        "bos_token_id": ids["eot"],
        "decoder_start_token_id": ids["sot"],
        "eos_token_id": ids["eot"],
        "pad_token_id": ids["eot"],
        "max_length": 448,
        "max_initial_timestamp_index": 50,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "return_timestamps": False,
        "suppress_tokens": suppress_tokens(dims),
        "is_multilingual": not dims.english_only,
    }
    if not dims.english_only:
        cfg["lang_to_id"] = ids["lang_to_id"]
        cfg["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    return cfg


def _sinusoids(length: int, channels: int) -> np.ndarray:
    log_timescale_increment = np.log(10000) / (channels // 2 - 1)
    inv = np.exp(-log_timescale_increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def _tensor_for(name: str, shape: tuple[int, ...], index: int, std: float):
    """Deterministic random tensor for one parameter (seeded by its position, so shards are reproducible)."""
    import torch

    if name.endswith("encoder.embed_positions.weight"):
        return torch.from_numpy(_sinusoids(*shape))
    if "layer_norm" in name:
        return torch.ones(shape) if name.endswith(".weight") else torch.zeros(shape)
    if name.endswith(".bias"):
        return torch.zeros(shape)
    gen = torch.Generator().manual_seed(SEED + index)
    return torch.empty(shape).normal_(0.0, std, generator=gen)


def _write_weights(config, out_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        meta_model = WhisperForConditionalGeneration(config)
    # proj_out is tied to decoder.embed_tokens and not stored, exactly like the hub checkpoints.
    entries = [(n, tuple(p.shape)) for n, p in meta_model.state_dict().items() if n != "proj_out.weight"]
    total = sum(int(np.prod(s)) * 4 for _, s in entries)
    shards: list[list[tuple[str, tuple]]] = [[]]
    size = 0
    for name, shape in entries:
        nbytes = int(np.prod(shape)) * 4
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    weight_map = {}
    index = 0
    for i, shard in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard:
            tensors[name] = _tensor_for(name, shape, index, config.init_std)
            index += 1
            weight_map[name] = fname
        save_file(tensors, str(out_dir / fname), metadata={"format": "pt"})
        del tensors
    if len(shards) > 1:
        index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))


def write_model_files(out_dir: Path, dims: ModelDims, generation: dict):
    """Everything of a Hugging Face Whisper directory but the weights: config, generation config, feature
    extractor, tokenizer. Returns the WhisperConfig."""
    from transformers import WhisperFeatureExtractor

    config = whisper_config(dims)
    config.save_pretrained(str(out_dir))
    (Path(out_dir) / "generation_config.json").write_text(json.dumps(generation, indent=2))
    WhisperFeatureExtractor(feature_size=dims.n_mels).save_pretrained(str(out_dir))
    build_tokenizer(out_dir, english_only=dims.english_only, num_languages=dims.num_languages)
    return config


def synthetic_dir(size: str) -> Path:
    return models_dir() / f"synthetic-{size}"


def safetensors_complete(path: Path) -> bool:
    """Whether a .safetensors file holds every byte its header promises (a truncated copy does not)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return Path(path).stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False


def ensure_synthetic(size: str) -> Path:
    """Return the cached synthetic checkpoint directory for ``size``, building it on first use."""
    dims = get_dims(size)
    target = synthetic_dir(size)
    marker = target / SYNTHETIC_MARKER
    if marker.exists():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):  # a damaged marker: the checkpoint is made again
            info = {}
        intact = all(safetensors_complete(p) for p in target.glob("*.safetensors"))
        if isinstance(info, dict) and info.get("format_version") == FORMAT_VERSION and intact:
            return target  # (a truncated weight file: made again below)
    with atomic_dir(target) as tmp:
        config = write_model_files(tmp, dims, generation_config(dims))
        _write_weights(config, tmp)
        (tmp / SYNTHETIC_MARKER).write_text(
            json.dumps({"size": size, "seed": SEED, "format_version": FORMAT_VERSION, "architecture_of": dims.hub_id},
                       indent=2)
        )
    return target


def is_synthetic(model_dir: Path) -> bool:
    return (Path(model_dir) / SYNTHETIC_MARKER).exists()
