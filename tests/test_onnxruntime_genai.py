"""onnxruntime-genai recipes: real model-builder exports of trained tiny.en and synthetic tiny, real LibriSpeech audio,
decoded by onnxruntime-genai's C++ loop."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("onnxruntime_genai")

from whisperopt.data import load_audio, load_dataset  # noqa: E402
from whisperopt.data.references import forced_length  # noqa: E402
from whisperopt.errors import WhisperoptError  # noqa: E402
from whisperopt.metrics.fidelity import relative_l2, top1_agreement  # noqa: E402
from whisperopt.metrics.wer import corpus_rate, utterance_errors  # noqa: E402
from whisperopt.recipes import get_recipe  # noqa: E402
from whisperopt.recipes.artifacts import build_artifact  # noqa: E402
from whisperopt.recipes.base import Artifact, DecodeOptions  # noqa: E402
from whisperopt.recipes.onnxruntime_genai import run_builder  # noqa: E402
from whisperopt.recipes.validation import probe_inputs  # noqa: E402

N_UTT = 3
# trained tiny.en on the first 3 test-clean utterances (~60 words): torch-fp32 and ortgenai-fp32 3.3 %,
# ortgenai-int8 3.3 %; one word is ~1.7 points
MAX_WER = 15.0
MAX_WER_OVER_FP32 = 5.0
# synthetic tiny, the same 3 test-clean utterances: fp32 encoder rel. error ~3e-7 and 100 % teacher-forced top-1
FP32_MAX_ENC_ERROR = 1e-4
FP32_MIN_AGREEMENT = 0.99


def _wer(refs: list[str], hyps: list[str]) -> float:
    return 100 * corpus_rate([utterance_errors(r, h)[0] for r, h in zip(refs, hyps)])


def _built(name: str, model, **options):
    recipe = get_recipe(name)
    art, _ = build_artifact(recipe, model.path, recipe.resolve_options(options))
    return recipe, art


@pytest.fixture(scope="module")
def test_clean(librispeech):
    utts = load_dataset("librispeech:test-clean").limit(N_UTT).utterances
    return [u.text for u in utts], [load_audio(u.audio) for u in utts]


@pytest.fixture(scope="module")
def torch_wer(tiny_en, test_clean):
    recipe = get_recipe("torch-fp32")
    rt = recipe.load(Artifact(recipe.name, tiny_en.path, tiny_en.path, {"weights_dir": str(tiny_en.path)}, {}), "cpu", 2)
    refs, audios = test_clean
    try:
        return _wer(refs, [t.text for t in rt.transcribe(audios, DecodeOptions())])
    finally:
        rt.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ortgenai-fp32", "ortgenai-int8"])
def test_trained_tiny_en_transcribes_test_clean(name, tiny_en, test_clean, torch_wer):
    recipe, art = _built(name, tiny_en)
    validation = art.manifest["validation"]
    # the build check ran on trained weights: teacher forcing through genai and a free-running genai decode
    assert validation["passed"] and validation["decode_utterances"] == 6 and not validation["decode_runaway"]
    assert validation["teacher_forced_agreement"] >= 0.9
    builder = art.manifest["builder"]
    assert builder["precision"] == name.split("-")[1] and builder["execution_provider"] == "cpu"
    refs, audios = test_clean
    rt = recipe.load(art, "cpu", 2)
    try:
        one_by_one = [rt.transcribe([a], DecodeOptions())[0] for a in audios]
        batched = rt.transcribe(audios, DecodeOptions(batch_size=N_UTT))
        info = rt.run_info()
    finally:
        rt.close()
    wer = _wer(refs, [t.text for t in one_by_one])
    assert wer < MAX_WER and wer <= torch_wer + MAX_WER_OVER_FP32, (wer, torch_wer, [t.text for t in one_by_one])
    # one genai batch decodes each utterance as alone (every window is padded to 30 s)
    assert [t.tokens for t in batched] == [t.tokens for t in one_by_one]
    assert all(t.tokens and t.text for t in one_by_one)
    assert info["decode_settings"]["intra_op_num_threads"] == 2 and info["decoder_step_ms_median"] > 0


@pytest.mark.slow
def test_synthetic_fp32_fidelity_and_forced_lengths(tiny_model, test_clean):
    recipe, art = _built("ortgenai-fp32", tiny_model)
    assert art.manifest["validation"]["decode_check"].startswith("skipped")
    assert art.manifest["components"]["decoder"]["data_bytes"] > 0
    torch_recipe = get_recipe("torch-fp32")
    ref_rt = torch_recipe.load(Artifact(torch_recipe.name, tiny_model.path, tiny_model.path,
                                        {"weights_dir": str(tiny_model.path)}, {}), "cpu", 2)
    rt = recipe.load(art, "cpu", 2)
    try:
        errors, matches, positions = [], 0, 0
        for _, feats, tokens, p in probe_inputs(tiny_model.path, "librispeech:test-clean", N_UTT):
            errors.append(relative_l2(ref_rt.encoder_output(feats), rt.encoder_output(feats)))
            ours = np.asarray(rt.teacher_forced_top1(feats, tokens))
            assert len(ours) == len(tokens)
            m, n = top1_agreement(np.asarray(ref_rt.teacher_forced_top1(feats, tokens))[p - 1:], ours[p - 1:])
            matches, positions = matches + m, positions + n
        assert max(errors) <= FP32_MAX_ENC_ERROR and matches / positions >= FP32_MIN_AGREEMENT, (errors, matches)
        refs, audios = test_clean
        forced = [forced_length(rt.tokenizer, r) for r in refs]
        out = rt.transcribe(audios, DecodeOptions(), forced)
        assert [len(t.tokens) for t in out] == forced  # min_length = max_length: end-of-text masked until n
        assert rt.run_info()["forced_lengths_checked"] == N_UTT
        short = rt.transcribe(audios[:1], DecodeOptions(max_new_tokens=3))[0]
        assert len(short.tokens) <= 3
    finally:
        rt.close()
        ref_rt.close()


@pytest.mark.slow
def test_synthetic_int8_builds_matmulnbits(tiny_model):
    _, art = _built("ortgenai-int8", tiny_model)
    import onnx

    graph = onnx.load(str(art.dir / "decoder.onnx"), load_external_data=False).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert nbits and all({a.name: a.i for a in n.attribute}["bits"] == 8 for n in nbits)
    assert art.manifest["builder"]["extra_options"] == {"block_size": 32, "accuracy_level": 4, "is_symmetric": True}
    fp32 = get_recipe("ortgenai-fp32")
    fp32_art, _ = build_artifact(fp32, tiny_model.path, {})
    assert get_recipe("ortgenai-int8").size_bytes(art) < 0.7 * fp32.size_bytes(fp32_art)
    assert art.manifest["validation"]["teacher_forced_agreement"] >= 0.80


@pytest.mark.slow
def test_bad_options_and_builder_failure_are_one_line(tmp_path):
    with pytest.raises(WhisperoptError, match="block_size"):
        get_recipe("ortgenai-int8").resolve_options({"block_size": "48"})
    with pytest.raises(WhisperoptError, match="no option"):
        get_recipe("ortgenai-fp32").resolve_options({"block_size": "32"})
    (tmp_path / "in").mkdir()
    with pytest.raises(WhisperoptError, match="model builder failed") as exc:
        run_builder(tmp_path / "in", tmp_path / "out", "fp32", {})
    assert "\n" not in str(exc.value)


def test_missing_engine_is_skipped(monkeypatch):
    assert "needs CPU" in get_recipe("ortgenai-fp32").unavailable_reason("cuda")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime_genai" else real(name, *a))
    for name in ("ortgenai-fp32", "ortgenai-int8", "ortgenai-int4"):
        why = get_recipe(name).unavailable_reason("cpu")
        assert why == "engine not installed (missing Python module onnxruntime_genai)"
