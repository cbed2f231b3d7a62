"""ONNX Runtime recipes: real Optimum exports and ORT quantisations of synthetic tiny, run on real LibriSpeech audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from whisperopt.bench.results import read_rows
from whisperopt.cli import main
from whisperopt.errors import WhisperoptError
from whisperopt.recipes import get_recipe, onnx_tools
from whisperopt.recipes import onnxruntime as ortr
from whisperopt.recipes.artifacts import build_artifact
from whisperopt.recipes.base import Artifact
from whisperopt.recipes.validation import validate_artifact

STATIC_OPTS = {"calibration_size": "3"}  # small calibration set keeps the test fast; the default is 10
# the former default: ORT's quantize_static calibrates both decoders, the encoder quantises its activations per call
ORT_STATIC_OPTS = {**STATIC_OPTS, "quantizer": "ort", "encoder": "dynamic", "decoder": "static", "float_layers": "none"}


@pytest.fixture(scope="module")
def artifacts(tiny_model, librispeech):
    built = {}
    for key, name, opts in [("onnx-fp32", "onnx-fp32", {}), ("onnx-int8-dynamic", "onnx-int8-dynamic", {}),
                            ("onnx-int8-static", "onnx-int8-static", STATIC_OPTS),
                            ("onnx-int8-static-ort", "onnx-int8-static", ORT_STATIC_OPTS), ("onnx-int4", "onnx-int4", {})]:
        recipe = get_recipe(name)
        built[key] = build_artifact(recipe, tiny_model.path, recipe.resolve_options(opts))[0]
    return built


@pytest.mark.slow
def test_export_is_cached_with_a_manifest(artifacts, tiny_model):
    recipe = get_recipe("onnx-fp32")
    again, hit = build_artifact(recipe, tiny_model.path, recipe.resolve_options({}))
    assert hit and again.dir == artifacts["onnx-fp32"].dir
    m = again.manifest
    assert m["recipe"] == "onnx-fp32" and m["source_model"] == str(tiny_model.path)
    assert m["versions"]["onnxruntime"] and m["versions"]["optimum-onnx"] and m["versions"]["whisperopt"]
    assert sorted(m["files"]) == [ortr.DECODER_MERGED, ortr.ENCODER]
    assert m["validation"]["passed"] and m["validation"]["teacher_forced_agreement"] >= 0.999
    assert m["validation"]["encoder_rel_error"] < 1e-5
    # the merged decoder (If on use_cache_branch) is what runs: one graph for the first step and the KV-cache steps
    rt = recipe.load(again, "cpu", 2)
    assert rt.session_info["merged_decoder"] and rt.session_info["intra_op_num_threads"] == 2
    names = {i.name for i in rt.decoder_session.get_inputs()}
    assert "use_cache_branch" in names and any(n.startswith("past_key_values.") for n in names)


@pytest.mark.parametrize("flags,machine,isa,reduce_range,weight_type", [
    ({"avx", "avx2", "fma", "f16c"}, "x86_64", "avx2", True, "QInt8"),
    ({"avx2", "avx512f", "avx512bw"}, "x86_64", "avx512", True, "QInt8"),
    ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "avx512_vnni", False, "QInt8"),
    ({"avx2", "avx_vnni"}, "x86_64", "avx_vnni", False, "QInt8"),
    ({"avx2", "avx512_vnni", "amx_int8"}, "x86_64", "amx", False, "QInt8"),
    ({"sse4_2"}, "x86_64", "u8u8", False, "QUInt8"),
    (set(), "aarch64", "arm64", False, "QInt8"),
])
def test_isa_presets(flags, machine, isa, reduce_range, weight_type):
    assert onnx_tools.detect_isa(flags, machine) == isa
    preset = onnx_tools.DYNAMIC_PRESETS[isa]
    assert preset["reduce_range"] is reduce_range and preset["weight_type"] == weight_type


@pytest.mark.slow
def test_int8_dynamic_preset_follows_this_cpu(artifacts):
    q = artifacts["onnx-int8-dynamic"].manifest["quantization"]
    here = onnx_tools.detect_isa()
    assert q["isa_detected"] == here and q["isa"] == here
    assert q["reduce_range"] is onnx_tools.DYNAMIC_PRESETS[here]["reduce_range"]
    assert q["op_types"] == ["MatMul"] and q["lm_head_quantized"]
    ops = q["ops_after"]
    assert ops[ortr.ENCODER]["MatMulInteger"] >= 4 * 6  # 4 encoder layers x (q, k, v, out, fc1, fc2)
    assert ops[ortr.DECODER_MERGED]["DynamicQuantizeLinear"] > 0
    v = artifacts["onnx-int8-dynamic"].manifest["validation"]
    assert v["passed"] and v["teacher_forced_agreement"] >= get_recipe("onnx-int8-dynamic").fidelity_floor


def _inputs_dequantized(path: Path) -> dict[str, bool]:
    """Each MatMul of an ONNX graph (subgraphs too): whether its activation input comes from a DequantizeLinear."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = {}
    for g in onnx_tools.iter_graphs(model.graph):
        made_by = {o: n.op_type for n in g.node for o in n.output}
        out.update({n.name: made_by.get(n.input[0]) == "DequantizeLinear" for n in g.node if n.op_type == "MatMul"})
    return out


@pytest.mark.slow
def test_static_default_nncf_encoder_weight_only_decoder(artifacts):
    """The default: NNCF calibrates the encoder on dev-clean (SmoothQuant; fc2 kept float), the merged decoder is 8-bit
    weight-only (MatMulNBits, block 32, int8 activations per block in the kernel) but its cross-attention K/V
    projections (float); nothing of the decoders is calibrated."""
    art = artifacts["onnx-int8-static"]
    q = art.manifest["quantization"]
    cal = q["calibration"]
    assert cal["dataset"] == "librispeech:dev-clean" and cal["utterances"] == 3
    assert cal["per_graph"] == {"encoder": "nncf"} and cal["decoder_samples"] == 0
    assert q["quantizer"].startswith("nncf.quantize") and q["smooth_quant_alpha"]["encoder"] == 0.5
    assert q["float_layers"] == "encoder_fc2+cross_kv" and q["decoder"].startswith("int8 weight-only (MatMulNBits bits=8")
    assert q["decoder_weights"] == {"bits": 8, "block_size": 32, "symmetric": True, "accuracy_level": 4}
    enc = _inputs_dequantized(art.dir / ortr.ENCODER)
    fc2 = {n for n in enc if n.endswith("/fc2/MatMul")}
    assert len(fc2) == 4 and not any(enc[n] for n in fc2)  # one per encoder layer, each reading float activations
    linear = [n for n in enc if n.endswith(("_proj/MatMul", "/fc1/MatMul"))]
    assert len(linear) == 4 * 5 and all(enc[n] for n in linear)  # q, k, v, out, fc1: int8 activations, calibrated
    ops = q["ops_after"]
    dec = ops[ortr.DECODER_MERGED]
    # 4 decoder layers x (q, k, v, out, fc1, fc2, cross q, cross out) + the lm head; cross k/v are in one branch only
    assert dec["MatMulNBits"] >= 4 * 8 + 1 and dec["If"] == 1
    # the cross-attention K/V projections (4 layers x k, v; in the first-step branch only) stay float MatMuls
    cross = [n for n in _inputs_dequantized(art.dir / ortr.DECODER_MERGED) if n.endswith(("/encoder_attn/k_proj/MatMul",
                                                                                          "/encoder_attn/v_proj/MatMul"))]
    assert len(cross) == 4 * 2
    assert not dec.get("DynamicQuantizeLinear") and not dec.get("QuantizeLinear") and not dec.get("MatMulInteger")
    v = art.manifest["validation"]
    assert v["passed"] and v["teacher_forced_agreement"] >= get_recipe("onnx-int8-static").fidelity_floor


@pytest.mark.slow
def test_static_ort_quantizer_calibrates_both_decoders(artifacts):
    q = artifacts["onnx-int8-static-ort"].manifest["quantization"]
    cal = q["calibration"]
    assert cal["dataset"] == "librispeech:dev-clean" and cal["utterances"] == 3 and cal["method"] == "auto"
    # the decoders are calibrated; the encoder (option encoder=dynamic) quantises its activations per call
    assert cal["per_graph"] == {"decoder": "minmax", "decoder_with_past": "minmax"}
    assert cal["decoder_samples"] == 3 and cal["decoder_with_past_samples"] == 6
    assert q["quantizer"].startswith("onnxruntime.quantization.quantize_static") and "smooth_quant_alpha" not in q
    assert q["encoder"].startswith("int8 weights, activation ranges computed per call") and q["float_layers"] == "none"
    assert q["format"] == "QDQ" and q["ops_after"][ortr.DECODER_MERGED]["QuantizeLinear"] > 0
    assert q["ops_after"][ortr.ENCODER]["MatMulInteger"] >= 4 * 6 and not q["ops_after"][ortr.ENCODER].get("QuantizeLinear")
    assert q["ops_after"][ortr.DECODER_MERGED]["If"] == 1  # re-merged after quantising both decoders


@pytest.mark.slow
def test_float_layers_name_the_export_nodes(artifacts):
    """``float_layers`` groups select the intended MatMuls of the Optimum export (and only those)."""
    import onnx

    export = Path(artifacts["onnx-int8-static"].manifest["source_export"])
    enc = onnx.load(str(export / ortr.ENCODER), load_external_data=False)
    dec = onnx.load(str(export / ortr.DECODER), load_external_data=False)
    assert len(onnx_tools.float_layer_nodes(enc, "encoder", "encoder_fc2")) == 4  # one per encoder layer
    assert len(onnx_tools.float_layer_nodes(enc, "encoder", "encoder_fc1+encoder_fc2+encoder_qkv")) == 4 * 5
    assert onnx_tools.float_layer_nodes(enc, "encoder", "cross_kv+decoder_fc2") == []  # decoder groups
    kv = onnx_tools.float_layer_nodes(dec, "decoder", "cross_kv")
    assert len(kv) == 2 * 4 and all("/encoder_attn/" in n for n in kv)
    assert onnx_tools.float_layer_nodes(dec, "decoder", "none") == []
    static = get_recipe("onnx-int8-static")
    with pytest.raises(WhisperoptError, match="option float_layers: expected none or"):
        static.resolve_options({"float_layers": "fc3"})
    with pytest.raises(WhisperoptError, match="option encoder: expected one of"):
        static.resolve_options({"encoder": "int4"})


@pytest.mark.slow
def test_int4_uses_matmulnbits(artifacts):
    q = artifacts["onnx-int4"].manifest["quantization"]
    assert q["bits"] == 4 and q["block_size"] == 32
    assert q["ops_after"][ortr.ENCODER]["MatMulNBits"] >= 24
    fp32 = get_recipe("onnx-fp32").size_bytes(artifacts["onnx-fp32"])
    assert get_recipe("onnx-int4").size_bytes(artifacts["onnx-int4"]) < fp32


def test_bad_options_are_clear_errors():
    with pytest.raises(WhisperoptError, match="option isa: expected one of"):
        get_recipe("onnx-int8-dynamic").resolve_options({"isa": "avx9"})
    with pytest.raises(WhisperoptError, match="option block_size: expected a power of two"):
        get_recipe("onnx-int4").resolve_options({"block_size": "20"})
    with pytest.raises(WhisperoptError, match="option calibration: expected one of"):
        get_recipe("onnx-int8-static").resolve_options({"calibration": "guess"})
    with pytest.raises(WhisperoptError, match="option quantizer: expected one of ort, nncf"):
        get_recipe("onnx-int8-static").resolve_options({"quantizer": "inc"})
    with pytest.raises(WhisperoptError, match=r"option smooth_quant_alpha_encoder: expected a number in \[0, 1\]"):
        get_recipe("onnx-int8-static").resolve_options({"smooth_quant_alpha_encoder": "1.5"})
    with pytest.raises(WhisperoptError, match="encoder=dynamic with decoder=weights calibrates nothing; use "
                                              "onnx-int8-dynamic") as err:
        get_recipe("onnx-int8-static").resolve_options({"encoder": "dynamic"})
    with pytest.raises(WhisperoptError, match="option decoder_block_size: "):
        get_recipe("onnx-int8-static").resolve_options({"decoder_block_size": "24"})
    assert "\n" not in str(err.value)
    with pytest.raises(WhisperoptError, match="option op_types: expected a comma-separated subset"):
        get_recipe("onnx-int8-dynamic").resolve_options({"op_types": "Softmax"})


def _swap_fc1(path: Path, a: int, b: int) -> None:
    """Swap the fc1 weights of decoder layers ``a`` and ``b`` in a merged decoder (both If branches share them)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weights: dict[int, str] = {}
    for g in onnx_tools.iter_graphs(model.graph):
        for n in g.node:
            for layer in (a, b):
                if n.op_type == "MatMul" and f"/layers.{layer}/fc1/" in n.name:
                    weights.setdefault(layer, n.input[1])
    inits = {t.name: t for g in onnx_tools.iter_graphs(model.graph) for t in g.initializer}
    ta, tb = inits[weights[a]], inits[weights[b]]
    wa, wb = numpy_helper.to_array(ta).copy(), numpy_helper.to_array(tb).copy()
    ta.CopyFrom(numpy_helper.from_array(wb, ta.name))
    tb.CopyFrom(numpy_helper.from_array(wa, tb.name))
    onnx.save(model, str(path))


@pytest.mark.slow
def test_corrupted_export_fails_the_fidelity_check(artifacts, tiny_model, tmp_path):
    recipe = get_recipe("onnx-fp32")
    bad = tmp_path / "bad"
    shutil.copytree(artifacts["onnx-fp32"].dir, bad)
    _swap_fc1(bad / ortr.DECODER_MERGED, 0, 1)
    with pytest.raises(WhisperoptError, match="fidelity check failed"):
        validate_artifact(recipe, Artifact(recipe.name, bad, tiny_model.path, {}, recipe.resolve_options({})))
    # and the intact export passes the same check
    assert validate_artifact(recipe, artifacts["onnx-fp32"])["passed"]


@pytest.mark.slow
def test_dropped_kv_cache_fails_the_fidelity_check(artifacts, tiny_model, tmp_path):
    """A decoder whose KV-cache branch ignores the cached self-attention keys/values must fail the check."""
    import onnx
    from onnx import helper, numpy_helper

    recipe = get_recipe("onnx-fp32")
    bad = tmp_path / "nocache"
    shutil.copytree(artifacts["onnx-fp32"].dir, bad)
    model = onnx.load(str(bad / ortr.DECODER_MERGED))
    if_node = model.graph.node[0]
    assert if_node.op_type == "If"
    branch = next(a.g for a in if_node.attribute if a.name == "then_branch")  # use_cache_branch == True
    past = [i.name for i in model.graph.input if i.name.startswith("past_key_values.") and ".decoder." in i.name]
    assert past
    for name in past:  # scale every cached self-attention key/value by zero before the branch reads it
        for n in branch.node:
            for k, inp in enumerate(n.input):
                if inp == name:
                    n.input[k] = name + "_dropped"
    branch.initializer.append(numpy_helper.from_array(np.zeros((), dtype=np.float32), "drop_scale"))
    for name in past:
        branch.node.insert(0, helper.make_node("Mul", [name, "drop_scale"], [name + "_dropped"]))
    onnx.save(model, str(bad / ortr.DECODER_MERGED))
    with pytest.raises(WhisperoptError, match="fidelity check failed"):
        validate_artifact(recipe, Artifact(recipe.name, bad, tiny_model.path, {}, recipe.resolve_options({})))


@pytest.mark.slow
def test_bench_rows_for_every_onnx_recipe(tmp_path, artifacts, tiny_model):
    out = tmp_path / "bench"
    code = main(["bench", "--model", "synthetic:tiny", "--recipes",
                 "torch-fp32,onnx-fp32,onnx-fp16,onnx-int8-dynamic,onnx-int8-static", "--limit", "2",
                 "--threads", "2", "--fidelity-utterances", "2", "--out", str(out),
                 "--option", "onnx-int8-static:calibration_size=3"])
    assert code == 0
    rows = {r["recipe"]: r for r in json.loads((out / "summary.json").read_text())["recipes"]}
    assert rows["onnx-fp16"]["status"] == "skipped" and "CUDA" in rows["onnx-fp16"]["reason"]
    for name in ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static"):  # onnx-int4: test_contract.py transcribes it
        r = rows[name]
        assert r["status"] == "ok" and r["utterances"] == 2, r
        for key in ("eval_s", "speedup", "latency_p50_s", "rtfx", "load_s", "peak_ram_mb", "cpu_percent", "size_mb",
                    "compression", "encoder_rel_error", "teacher_forced_agreement"):
            assert r[key] is not None and r[key] >= 0, (name, key)
        assert r["wer"] is None  # synthetic weights
        for row in read_rows(out / f"{name}.rows.jsonl"):
            assert row["tokens"] == row["forced_tokens"], (name, row)  # forced decode length holds
        assert r["teacher_forced_agreement"] >= get_recipe(name).fidelity_floor - 0.1, (name, r)
    assert rows["onnx-fp32"]["teacher_forced_agreement"] >= 0.999
    assert rows["onnx-fp32"]["encoder_rel_error"] < 1e-5
    assert rows["onnx-int8-dynamic"]["size_mb"] < rows["onnx-fp32"]["size_mb"]
