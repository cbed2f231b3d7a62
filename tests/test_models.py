"""Synthetic checkpoints, openai-whisper .pt conversion and model resolution."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from whisperopt.errors import WhisperoptError
from whisperopt.models import SIZES, get_dims, resolve_model
from whisperopt.models.synthetic import generation_config, token_ids, whisper_config

# (d_model, encoder layers, decoder layers, heads, mel bins, vocab) of the published checkpoints
PUBLISHED = {
    "tiny": (384, 4, 4, 6, 80, 51865),
    "tiny.en": (384, 4, 4, 6, 80, 51864),
    "base": (512, 6, 6, 8, 80, 51865),
    "base.en": (512, 6, 6, 8, 80, 51864),
    "small": (768, 12, 12, 12, 80, 51865),
    "small.en": (768, 12, 12, 12, 80, 51864),
    "medium": (1024, 24, 24, 16, 80, 51865),
    "medium.en": (1024, 24, 24, 16, 80, 51864),
    "large-v2": (1280, 32, 32, 20, 80, 51865),
    "large-v3": (1280, 32, 32, 20, 128, 51866),
    "large-v3-turbo": (1280, 32, 4, 20, 128, 51866),
    "distil-large-v3": (1280, 32, 2, 20, 128, 51866),
}


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_architecture_of_every_size(size):
    cfg = whisper_config(get_dims(size))
    d, enc, dec, heads, mels, vocab = PUBLISHED[size]
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads, cfg.num_mel_bins,
            cfg.vocab_size) == (d, enc, dec, heads, mels, vocab)
    assert cfg.encoder_ffn_dim == cfg.decoder_ffn_dim == 4 * d
    assert (cfg.max_source_positions, cfg.max_target_positions) == (1500, 448)
    gen = generation_config(get_dims(size))
    english = size.endswith(".en")
    assert gen["decoder_start_token_id"] == (50257 if english else 50258)
    assert gen["no_timestamps_token_id"] == (50362 if english else (50364 if vocab == 51866 else 50363))
    if not english:
        assert gen["lang_to_id"]["<|en|>"] == 50259
        assert ("<|yue|>" in gen["lang_to_id"]) == (vocab == 51866)
        assert gen["task_to_id"]["transcribe"] == (50360 if vocab == 51866 else 50359)
    assert len(gen["alignment_heads"]) > 0
    assert set(SIZES) == set(PUBLISHED)


def test_synthetic_tiny_is_a_complete_hf_directory(tiny_model):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = tiny_model.path
    for name in ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json",
                 "tokenizer_config.json", "vocab.json", "merges.txt", "normalizer.json", "model.safetensors"):
        assert (path / name).exists(), name
    assert tiny_model.synthetic
    model = WhisperForConditionalGeneration.from_pretrained(str(path))
    assert sum(p.numel() for p in model.parameters()) == 37_760_640  # whisper-tiny's parameter count
    processor = WhisperProcessor.from_pretrained(str(path))
    assert processor.feature_extractor.feature_size == 80
    assert model.generation_config.lang_to_id["<|en|>"] == 50259
    # a second resolve reuses the cache
    assert resolve_model("synthetic:tiny").path == path


@pytest.mark.slow
def test_sharded_build_needs_one_shard_of_memory_and_is_deterministic(tmp_path, monkeypatch, tiny_model):
    """Large sizes are written shard by shard; with tiny shards the result must equal the one-file build."""
    from safetensors.torch import load_file

    from whisperopt.models import synthetic

    monkeypatch.setenv("WHISPEROPT_CACHE", str(tmp_path))
    monkeypatch.setattr(synthetic, "SHARD_BYTES", 16 * 1024 * 1024)
    path = synthetic.ensure_synthetic("tiny")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3
    merged = {}
    for shard in shards:
        merged.update(load_file(str(path / shard)))
    single = load_file(str(tiny_model.path / "model.safetensors"))
    assert merged.keys() == single.keys()
    for key in single:
        assert torch.equal(merged[key], single[key]), key


@pytest.mark.slow
def test_openai_checkpoint_is_converted_exactly(tmp_path, whisperopt_cache):
    """A .pt in openai-whisper's format converts to a HF directory whose outputs equal openai-whisper's."""
    import whisper
    from transformers import WhisperForConditionalGeneration
    from whisper.model import ModelDimensions

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=2,
                           n_vocab=51865, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=2)
    torch.manual_seed(0)
    ref = whisper.model.Whisper(dims)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.05)
    pt = tmp_path / "custom.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": ref.state_dict()}, pt)

    resolved = resolve_model(str(pt))
    assert not resolved.synthetic
    hf = WhisperForConditionalGeneration.from_pretrained(str(resolved.path)).eval()
    mel = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[50258, 50259, 50359, 50363, 440, 1723]])
    with torch.no_grad():
        ref_enc = ref.encoder(mel)
        ref_logits = ref.decoder(tokens, ref_enc)
        hf_out = hf(input_features=mel, decoder_input_ids=tokens)
    np.testing.assert_allclose(hf_out.encoder_last_hidden_state.numpy(), ref_enc.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(hf_out.logits.numpy(), ref_logits.numpy(), rtol=1e-3, atol=1e-3)


def test_bad_model_arguments(tmp_path):
    with pytest.raises(WhisperoptError, match="unknown Whisper size"):
        resolve_model("synthetic:huge")
    with pytest.raises(WhisperoptError, match="unknown model"):
        resolve_model("no-such-thing")
    with pytest.raises(WhisperoptError, match="not found"):
        resolve_model(str(tmp_path / "missing.pt"))
    with pytest.raises(WhisperoptError, match="no config.json"):
        resolve_model(str(tmp_path))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WhisperoptError, match="cannot read"):
        resolve_model(str(bad))
    # offline: a hub id fails with a one-line error that names the alternatives
    with pytest.raises(WhisperoptError, match="synthetic:<size>"):
        resolve_model("openai/whisper-tiny")


def test_token_ids_helper():
    assert token_ids(get_dims("tiny"))["<|notimestamps|>"] == 50363
    assert token_ids(get_dims("large-v3"))["<|notimestamps|>"] == 50364
