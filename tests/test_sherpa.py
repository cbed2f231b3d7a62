"""Sherpa-ONNX recipes: real exports of synthetic tiny to sherpa-onnx's Whisper format, run by sherpa-onnx itself."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("sherpa_onnx")

from whisperopt.bench.results import read_rows  # noqa: E402
from whisperopt.cli import main  # noqa: E402
from whisperopt.data import load_audio, load_dataset  # noqa: E402
from whisperopt.data.references import forced_length  # noqa: E402
from whisperopt.errors import WhisperoptError  # noqa: E402
from whisperopt.models.processor import load_processor  # noqa: E402
from whisperopt.recipes import get_recipe, onnx_tools  # noqa: E402
from whisperopt.recipes.artifacts import build_artifact  # noqa: E402
from whisperopt.recipes.base import Artifact, DecodeOptions  # noqa: E402
from whisperopt.recipes.validation import baseline_reference, fidelity_check, validate_artifact  # noqa: E402

N_UTT = 2


@pytest.fixture(scope="module")
def built(tiny_model, librispeech):
    out = {}
    for name in ("sherpa-fp32", "sherpa-int8"):
        recipe = get_recipe(name)
        out[name] = (recipe, build_artifact(recipe, tiny_model.path, recipe.resolve_options({}))[0])
    return out


@pytest.fixture(scope="module")
def reference(tiny_model):
    """torch-fp32 encoder outputs and teacher-forced top-1 on the validation utterances (computed once)."""
    return baseline_reference(tiny_model.path, threads=2)


@pytest.fixture(scope="module")
def utterances(tiny_model, librispeech):
    tok = load_processor(tiny_model.path).tokenizer
    utts = load_dataset("librispeech:test-clean").limit(N_UTT).utterances
    return [load_audio(u.audio) for u in utts], [forced_length(tok, u.text) for u in utts]


@pytest.mark.slow
def test_export_format_and_cache(built, tiny_model):
    import onnx

    recipe, art = built["sherpa-fp32"]
    again, hit = build_artifact(recipe, tiny_model.path, {})
    assert hit and again.dir == art.dir
    m = again.manifest
    assert m["versions"]["sherpa-onnx"] and m["encoder"] == "encoder.onnx" and m["decoder"] == "decoder.onnx"
    assert m["validation"]["passed"] and m["validation"]["teacher_forced_agreement"] >= recipe.fidelity_floor
    enc = onnx.load(str(art.dir / "encoder.onnx"))
    meta = {p.key: p.value for p in enc.metadata_props}
    tok = load_processor(tiny_model.path).tokenizer
    assert int(meta["eot"]) == tok.convert_tokens_to_ids("<|endoftext|>")
    assert int(meta["no_timestamps"]) == tok.convert_tokens_to_ids("<|notimestamps|>")
    assert meta["n_text_layer"] == "4" and meta["is_multilingual"] == "1"
    assert [o.name for o in enc.graph.output] == ["n_layer_cross_k", "n_layer_cross_v"]
    lines = (art.dir / "tokens.txt").read_text().splitlines()
    assert len(lines) == int(meta["eot"]) and lines[0].endswith(" 0")
    q = built["sherpa-int8"][1].manifest["quantization"]
    assert q["isa"] == onnx_tools.detect_isa() and q["op_types"] == ["MatMul"]
    # int8 MatMul weights (the embedding Gather table stays fp32, as in sherpa-onnx's own int8 exports)
    assert get_recipe("sherpa-int8").size_bytes(built["sherpa-int8"][1]) < 0.6 * recipe.size_bytes(art)


@pytest.mark.slow
def test_fidelity(built, tiny_model, reference):
    for name, max_enc in (("sherpa-fp32", 1e-4), ("sherpa-int8", 0.05)):
        recipe, art = built[name]
        rt = recipe.load(art, "cpu", 2)
        res = fidelity_check(rt, tiny_model.path, recipe.fidelity_floor, reference=reference)
        rt.close()
        print(f"{name}: encoder rel. error {res['encoder_rel_error']:.2e}, TF top-1 {res['teacher_forced_agreement']:.4f}")
        assert res["passed"] and res["encoder_rel_error"] <= max_enc


@pytest.mark.slow
def test_sherpa_runs_and_marks_not_comparable(built, utterances):
    recipe, art = built["sherpa-int8"]
    rt = recipe.load(art, "cpu", 2)
    audios, forced = utterances
    results = rt.transcribe(audios, DecodeOptions(), forced)
    assert len(results) == len(audios) and all(r.tokens for r in results)
    # sherpa-onnx's cap: 6 tokens per second of audio (+ tail padding), at most n_text_ctx / 2
    assert all(len(r.tokens) <= 224 for r in results)
    info = rt.run_info()
    assert "cannot force a decode length" in info["not_comparable"]
    assert info["decode_settings"]["decoding_method"] == "greedy_search" and info["decode_settings"]["num_threads"] == 2
    rt.close()


@pytest.mark.slow
def test_corrupted_artifact_fails(built, tiny_model, reference, tmp_path):
    """Permute the rows of the decoder's token embedding (tied output projection): loads, runs, fails the check."""
    import onnx
    from onnx import numpy_helper

    recipe, art = built["sherpa-fp32"]
    bad_dir = tmp_path / "sherpa-corrupted"
    shutil.copytree(art.dir, bad_dir)
    model = onnx.load(str(bad_dir / "decoder.onnx"))
    table = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    w = numpy_helper.to_array(table)
    assert w.shape[0] == 51865
    table.CopyFrom(numpy_helper.from_array(w[np.random.default_rng(0).permutation(w.shape[0])], table.name))
    onnx.save(model, str(bad_dir / "decoder.onnx"))
    manifest = json.loads((bad_dir / "manifest.json").read_text())
    bad = Artifact(recipe.name, bad_dir, art.model_dir, manifest, art.options)
    rt = recipe.load(bad, "cpu", 2)
    assert rt.transcribe([np.zeros(16000, dtype=np.float32)], DecodeOptions())  # sherpa still runs it
    res = fidelity_check(rt, tiny_model.path, recipe.fidelity_floor, reference=reference)
    rt.close()
    print(f"corrupted: TF top-1 {res['teacher_forced_agreement']:.4f}")
    assert not res["passed"] and res["teacher_forced_agreement"] < 0.5
    with pytest.raises(WhisperoptError, match="fidelity check failed"):
        validate_artifact(recipe, bad)
    # a graph that is not a sherpa encoder is refused with a one-line error
    (bad_dir / "encoder.onnx").write_bytes((art.dir / "decoder.onnx").read_bytes())
    with pytest.raises(WhisperoptError) as err:
        recipe.load(bad, "cpu", 2)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_bench_end_to_end(built, tiny_model, librispeech, tmp_path):
    out = tmp_path / "bench"
    code = main(["bench", "--model", "synthetic:tiny", "--recipes", "sherpa-fp32,sherpa-int8", "--limit", "2",
                 "--out", str(out), "--fidelity-utterances", "2", "--threads", "2"])
    assert code == 0
    md = (out / "summary.md").read_text()
    for name in ("sherpa-fp32", "sherpa-int8"):
        status = json.loads((out / f"{name}.status.json").read_text())
        assert status["status"] == "ok", status
        assert status["not_comparable"] and status["decode_settings"]["language"] == "en"
        assert status["teacher_forced_agreement"] >= get_recipe(name).fidelity_floor
        assert status["encoder_rel_error"] is not None
        rows = read_rows(out / f"{name}.rows.jsonl")
        assert len(rows) == 2 and all(r["tokens"] > 0 and r["forced_tokens"] > 0 for r in rows)
        assert f"| {name} (not comparable) |" in md and f"{name}: **not comparable**" in md
