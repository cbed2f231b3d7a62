"""ct2-int8-fw-defaults: ct2-int8's artifact through faster-whisper's WhisperModel.transcribe with its own defaults
(beam 5, temperature fallback, timestamps, conditioning, its front end), as its users run it; its rows say so."""

from __future__ import annotations

import pytest

pytest.importorskip("ctranslate2")
pytest.importorskip("faster_whisper")

from whisperopt.data import load_audio, load_dataset  # noqa: E402
from whisperopt.data.references import forced_length  # noqa: E402
from whisperopt.metrics.wer import corpus_rate, utterance_errors  # noqa: E402
from whisperopt.models.processor import load_processor  # noqa: E402
from whisperopt.recipes import get_recipe  # noqa: E402
from whisperopt.recipes.artifacts import build_artifact  # noqa: E402
from whisperopt.recipes.base import DecodeOptions  # noqa: E402

NAME = "ct2-int8-fw-defaults"
N_UTT = 3
MAX_WER = 15.0  # measured: 1 error in 58 words on these 3 utterances (torch-fp32 greedy: 1 too)


def _load(model):
    recipe = get_recipe(NAME)
    art, _ = build_artifact(recipe, model.path, recipe.resolve_options({}))
    return recipe, art, recipe.load(art, "cpu", 2)


def _utterances(n=N_UTT):
    return load_dataset("librispeech:test-clean").limit(n).utterances


def test_declared_as_ct2_int8_run_differently():
    recipe, base = get_recipe(NAME), get_recipe("ct2-int8")
    assert recipe.base_recipe is base and recipe.shares_base_weights and not base.faster_whisper_defaults
    assert recipe.fidelity_floor == base.fidelity_floor and recipe.weight_bits == 8
    assert "faster-whisper's defaults" in recipe.description and "not the bench's settings" in recipe.description


@pytest.mark.slow
def test_trained_runs_faster_whisper_defaults(tiny_en, librispeech):
    recipe, art, rt = _load(tiny_en)
    try:
        # no build of its own: ct2-int8's artifact and its build check
        assert art.manifest["validation"]["inherited_from"] == "ct2-int8" and art.manifest["validation"]["passed"]
        utts = _utterances()
        out = rt.transcribe([load_audio(u.audio) for u in utts], DecodeOptions(beam_size=2, max_new_tokens=100))
        info = rt.run_info()
    finally:
        rt.close()
    wer = 100 * corpus_rate([utterance_errors(u.text, t.text)[0] for u, t in zip(utts, out)])
    assert wer <= MAX_WER
    tok = load_processor(tiny_en.path).tokenizer
    ts_begin = tok.convert_tokens_to_ids("<|notimestamps|>") + 1
    assert all(any(t >= ts_begin for t in r.tokens) for r in out)  # decoded with timestamps, as by default
    s = info["decode_settings"]
    assert s["beam_size"] == 5 and s["best_of"] == 5 and s["temperature"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert s["condition_on_previous_text"] is True and s["without_timestamps"] is False and s["vad_filter"] is False
    assert s["compression_ratio_threshold"] == 2.4 and s["log_prob_threshold"] == -1.0
    assert s["language"] == "en" and s["task"] == "transcribe" and "faster-whisper's own" in s["front_end"]
    assert "not the bench's decoding" in s["settings"] and s["generate_calls_per_utterance"] >= 1
    assert s["bench_options_not_applied"] == "beam_size, max_new_tokens"  # said, not silently dropped
    # trained weights: the WER is comparable; the row is labelled by its settings (§, never recommended)
    assert "not_comparable" not in info and "not the bench's decoding" in info["own_settings"]


@pytest.mark.slow
def test_synthetic_not_comparable(tiny_model, librispeech):
    recipe, art, rt = _load(tiny_model)
    u = _utterances(1)[0]
    n = forced_length(load_processor(tiny_model.path).tokenizer, u.text)
    try:
        (out,) = rt.transcribe([load_audio(u.audio)], DecodeOptions(), [n])
        info = rt.run_info()
    finally:
        rt.close()
    assert out.tokens and "cannot force a decode length" in info["not_comparable"]
    assert "synthetic weights only" in info["decode_settings"]["max_new_tokens"]
