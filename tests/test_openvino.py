"""OpenVINO recipes: real optimum-intel exports and NNCF compressions of synthetic tiny, run on real LibriSpeech audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from whisperopt.bench.results import read_rows
from whisperopt.cli import main
from whisperopt.errors import WhisperoptError
from whisperopt.recipes import get_recipe
from whisperopt.recipes import openvino_runtime as ovr
from whisperopt.recipes.artifacts import build_artifact
from whisperopt.recipes.base import Artifact
from whisperopt.recipes.validation import validate_artifact

from .conftest import DEV_CLEAN, TEST_CLEAN

# a small calibration set keeps the test fast (the default is 10); decoder=static: the fixture's build quantises both
# graphs statically, test_ptq_default_mixed_precision builds the default (int8 weight-only decoder)
PTQ_OPTS = {"calibration_size": "2", "decoder": "static"}
BUILDS = [("openvino-fp32", {}), ("openvino-fp16", {}), ("openvino-int8-weights", {}), ("openvino-int4-weights", {}),
          ("openvino-int8-ptq", PTQ_OPTS)]
COMPRESSED = ("openvino-int8-weights", "openvino-int4-weights", "openvino-int8-ptq")


@pytest.fixture(scope="module")
def artifacts(tiny_model, librispeech):
    built = {}
    for name, opts in BUILDS:
        recipe = get_recipe(name)
        built[name] = build_artifact(recipe, tiny_model.path, recipe.resolve_options(opts))[0]
    return built


@pytest.mark.slow
def test_builds_are_cached_with_a_manifest(artifacts, tiny_model):
    for name, opts in BUILDS:
        recipe = get_recipe(name)
        again, hit = build_artifact(recipe, tiny_model.path, recipe.resolve_options(opts))
        assert hit and again.dir == artifacts[name].dir, name
        m = again.manifest
        assert m["recipe"] == name and m["engine"] == "openvino" and m["source_model"] == str(tiny_model.path)
        for lib in ("openvino", "nncf", "optimum-intel", "openvino-genai", "transformers", "whisperopt"):
            assert m["versions"][lib], (name, lib)
        assert m["options"]["ov_device"] == "CPU" and m["options"]["performance_hint"] == "LATENCY"
        assert m["validation"]["passed"] and m["validation"]["dataset"] == "librispeech:dev-clean"
        assert m["validation"]["teacher_forced_agreement"] >= recipe.fidelity_floor
        for stem in ovr.COMPONENTS.values():
            assert (again.dir / f"{stem}.xml").is_file() and (again.dir / f"{stem}.bin").is_file()
    fp32 = artifacts["openvino-fp32"].manifest
    assert fp32["stateful_decoder"] is True
    for f in ("openvino_tokenizer.xml", "openvino_detokenizer.xml", "tokenizer.json", "generation_config.json"):
        assert (artifacts["openvino-fp32"].dir / f).is_file(), f  # what openvino-genai's WhisperPipeline reads
    assert artifacts["openvino-int8-weights"].manifest["nncf_compress_weights"] == {"mode": "int8_asym"}
    assert artifacts["openvino-int4-weights"].manifest["nncf_compress_weights"] == {
        "mode": "int4_asym", "group_size": 64, "ratio": 1.0, "all_layers": False}
    cal = artifacts["openvino-int8-ptq"].manifest["calibration"]
    assert cal["dataset"] == "librispeech:dev-clean" and Path(cal["root"]) == DEV_CLEAN
    assert cal["utterances"] == 2 and len(cal["ids"]) == 2
    assert cal["encoder_samples"] == 2 and cal["decoder_samples"] > 2  # one decoder call per generated token
    assert cal["smooth_quant_alpha"] == {"encoder": 0.5, "decoder": 0.95} and cal["model_type"] == "TRANSFORMER"
    assert cal["fast_bias_correction"] is True


@pytest.mark.slow
def test_fp32_ir_matches_torch(artifacts):
    v = artifacts["openvino-fp32"].manifest["validation"]
    assert v["teacher_forced_agreement"] >= 0.999 and v["teacher_forced_positions"] > 20
    assert v["encoder_rel_error"] < 1e-5


@pytest.mark.slow
def test_compression_per_component(artifacts):
    fp32 = ovr.component_bytes(artifacts["openvino-fp32"].dir)
    fp16 = artifacts["openvino-fp16"].manifest["components"]
    assert all(1.9 < fp16[comp]["compression"] < 2.1 for comp in ("encoder", "decoder")), fp16
    for name in COMPRESSED:
        comps = artifacts[name].manifest["components"]
        on_disk = ovr.component_bytes(artifacts[name].dir)
        for comp in ("encoder", "decoder"):
            c = comps[comp]
            assert c["bin_bytes"] == on_disk[comp]["bin_bytes"] and c["fp32_bin_bytes"] == fp32[comp]["bin_bytes"]
            assert c["compression"] > 1.5, (name, comp, c)
    int8, int4 = artifacts["openvino-int8-weights"].manifest, artifacts["openvino-int4-weights"].manifest
    for comp in ("encoder", "decoder"):
        assert int4["components"][comp]["bin_bytes"] < int8["components"][comp]["bin_bytes"]
    # the PTQ IR really runs int8: FakeQuantize (activations) in both components
    import openvino as ov

    core = ov.Core()
    for stem in ovr.COMPONENTS.values():
        ops = {op.get_type_name() for op in core.read_model(str(artifacts["openvino-int8-ptq"].dir / f"{stem}.xml")).get_ops()}
        assert "FakeQuantize" in ops, stem


def test_calibration_refuses_test_data(tmp_path):
    recipe = get_recipe("openvino-int8-ptq")
    for data in ("librispeech:test-clean", "librispeech:test-other", str(TEST_CLEAN)):
        with pytest.raises(WhisperoptError, match="is test data"):
            recipe.resolve_options({"calibration_data": data})
    with pytest.raises(WhisperoptError, match="is test data"):
        get_recipe("openvino-int8-ptq-genai").resolve_options({"calibration_data": "librispeech:test-clean"})
    # a manifest that hides test-clean audio behind an innocent name is refused when the set is loaded
    flac = sorted(TEST_CLEAN.rglob("*.flac"))[:2]
    manifest = tmp_path / "calib.jsonl"
    manifest.write_text("".join(json.dumps({"audio": str(f), "text": "x", "id": f.stem}) + "\n" for f in flac))
    opts = recipe.resolve_options({"calibration_data": str(manifest), "calibration_size": "2"})
    with pytest.raises(WhisperoptError, match="contains test audio"):
        recipe.calibration_set(opts)


@pytest.mark.slow
def test_ptq_float_layers_name_real_matmuls(artifacts, tiny_model):
    """Every layer group openvino-int8-ptq can keep in float matches the MatMuls of optimum-intel's export (tiny: 4
    layers each side): a renamed export would otherwise quantise everything silently."""
    import openvino as ov

    from whisperopt.recipes.openvino_ptq import PTQ_FLOAT_LAYERS, _matched, ptq_ignored_patterns

    core = ov.Core()
    models = {comp: core.read_model(str(artifacts["openvino-fp32"].dir / f"{stem}.xml"))
              for comp, stem in ovr.COMPONENTS.items()}
    layers = json.loads((tiny_model.path / "config.json").read_text())["encoder_layers"]
    per_layer = {"encoder_fc2": 1, "encoder_fc1": 1, "encoder_attn": 4, "decoder_fc2": 1, "decoder_fc1": 1,
                 "decoder_self_attn": 4, "cross_attn": 4}
    for name, (comp, _) in PTQ_FLOAT_LAYERS.items():
        want = 1 if name == "lm_head" else per_layer[name] * layers
        assert _matched(models[comp], ptq_ignored_patterns(name, comp)) == want, name
        other = "decoder" if comp == "encoder" else "encoder"
        assert ptq_ignored_patterns(name, other) == []
    recipe = get_recipe("openvino-int8-ptq")
    assert recipe.resolve_options({"float_layers": "decoder_fc2+lm_head", "decoder": "weights"})["decoder"] == "weights"
    with pytest.raises(WhisperoptError, match="float_layers: expected none or names"):
        recipe.resolve_options({"float_layers": "decoder_fc3"})
    with pytest.raises(WhisperoptError, match="option decoder: expected one of"):
        recipe.resolve_options({"decoder": "dynamic"})


@pytest.mark.slow
def test_ptq_default_mixed_precision(artifacts, tiny_model):
    """The default openvino-int8-ptq: static INT8 encoder with its fc2 layers in fp32, int8 weight-only decoder."""
    import openvino as ov

    recipe = get_recipe("openvino-int8-ptq")
    art = build_artifact(recipe, tiny_model.path, recipe.resolve_options({"calibration_size": "2"}))[0]
    m = art.manifest
    assert m["options"]["decoder"] == "weights" and m["options"]["float_layers"] == "encoder_fc2"
    layers = json.loads((tiny_model.path / "config.json").read_text())["encoder_layers"]
    assert m["float_layers"]["matmuls_kept_float"] == {"encoder": layers}  # the decoder is not quantised statically
    assert m["calibration"]["decoder_samples"] == 0 and m["calibration"]["encoder_samples"] == 2
    assert m["validation"]["passed"]
    core = ov.Core()
    enc = core.read_model(str(art.dir / f"{ovr.COMPONENTS['encoder']}.xml"))
    dec = core.read_model(str(art.dir / f"{ovr.COMPONENTS['decoder']}.xml"))
    assert any(op.get_type_name() == "FakeQuantize" for op in enc.get_ops())
    assert not any(op.get_type_name() == "FakeQuantize" for op in dec.get_ops())
    int8 = {op.get_output_element_type(0).get_type_name() for op in dec.get_ops() if op.get_type_name() == "Constant"}
    assert int8 & {"u8", "i8"}, int8  # compressed weights
    # fc2 MatMuls take float activations: no FakeQuantize feeds them
    fc2 = [op for op in enc.get_ops() if op.get_type_name() == "MatMul" and ".fc2/" in op.get_friendly_name()]
    assert len(fc2) == layers
    assert all(op.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize" for op in fc2)
    assert m["components"]["decoder"]["compression"] > 3


@pytest.mark.slow
def test_bad_options_are_clear_errors(artifacts, tiny_model, tmp_path):
    with pytest.raises(WhisperoptError, match="option mode: expected one of"):
        get_recipe("openvino-int8-weights").resolve_options({"mode": "int3"})
    with pytest.raises(WhisperoptError, match="option ov_device"):
        get_recipe("openvino-fp32").resolve_options({"ov_device": "TPU"})
    with pytest.raises(WhisperoptError, match="calibration_size: expected a positive integer"):
        get_recipe("openvino-int8-ptq").resolve_options({"calibration_size": "0"})
    with pytest.raises(WhisperoptError, match="smooth_quant_alpha_decoder"):
        get_recipe("openvino-int8-ptq").resolve_options({"smooth_quant_alpha_decoder": "1.5"})
    recipe = get_recipe("openvino-int4-weights")
    with pytest.raises(WhisperoptError, match="group_size=100 does not divide"):
        build_artifact(recipe, tiny_model.path, recipe.resolve_options({"group_size": "100"}))


def _swap_decoder_fc1(src: Path, dst: Path) -> None:
    """Write ``dst``'s decoder IR as ``src``'s with the fc1 weights of decoder layers 0 and 1 swapped."""
    import openvino as ov

    model = ov.Core().read_model(str(src / f"{ovr.DECODER}.xml"))
    consts = {op.get_friendly_name(): op for op in model.get_ops() if op.get_type_name() == "Constant"}
    a, b = (consts[f"self.model.decoder.layers.{i}.fc1.weight"] for i in (0, 1))
    wa, wb = a.get_data().copy(), b.get_data().copy()
    assert wa.shape == wb.shape and not np.array_equal(wa, wb)
    a.output(0).replace(ov.op.Constant(wb).output(0))
    b.output(0).replace(ov.op.Constant(wa).output(0))
    ov.save_model(model, str(dst / f"{ovr.DECODER}.xml"), compress_to_fp16=False)


@pytest.mark.slow
def test_corrupted_ir_fails_the_fidelity_check(artifacts, tiny_model, tmp_path):
    recipe = get_recipe("openvino-fp32")
    good = artifacts["openvino-fp32"].dir
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    _swap_decoder_fc1(good, bad)
    assert (bad / f"{ovr.DECODER}.bin").read_bytes() != (good / f"{ovr.DECODER}.bin").read_bytes()
    with pytest.raises(WhisperoptError, match="fidelity check failed"):
        validate_artifact(recipe, Artifact(recipe.name, bad, tiny_model.path, {}, recipe.resolve_options({})))
    # the intact IR passes the same check
    assert validate_artifact(recipe, artifacts["openvino-fp32"])["passed"]


@pytest.mark.slow
def test_bench_rows_for_every_openvino_recipe(tmp_path, artifacts, tiny_model):
    out = tmp_path / "bench"
    # fp32 (the reference IR), a compressed IR and its -genai twin; fp16 and the weight-only int8/int4 IRs are built and
    # checked above and transcribe in test_contract.py, which keeps this bench within CI's time
    names = ["openvino-fp32", "openvino-int8-ptq", "openvino-int8-ptq-genai"]
    code = main(["bench", "--model", "synthetic:tiny", "--recipes", ",".join(["torch-fp32"] + names),
                 "--limit", "2", "--threads", "2", "--fidelity-utterances", "1", "--out", str(out),
                 *[arg for recipe in ("openvino-int8-ptq", "openvino-int8-ptq-genai") for key, value in PTQ_OPTS.items()
                   for arg in ("--option", f"{recipe}:{key}={value}")]])  # the fixture's build, cached
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["recipe"]: r for r in summary["recipes"]}
    for name in names:
        r = rows[name]
        assert r["status"] == "ok" and r["utterances"] == 2, r
        for key in ("eval_s", "speedup", "latency_p50_s", "rtfx", "load_s", "peak_ram_mb", "cpu_percent", "size_mb",
                    "compression", "encoder_rel_error", "teacher_forced_agreement"):
            assert r[key] is not None and r[key] >= 0, (name, key)
        assert r["wer"] is None  # synthetic weights
        for row in read_rows(out / f"{name}.rows.jsonl"):
            assert row["tokens"] == row["forced_tokens"], (name, row)  # forced decode length holds
        # per-component timing and size, and speed-ups against the same loop's fp32 IR
        assert r["component_ms"]["encoder_ms_median"] > 0 and r["component_ms"]["decoder_ms_median"] > 0, name
        assert set(r["components"]) == {"encoder", "decoder"}
        sp = r["component_speedup"]
        assert sp["baseline"] == "openvino-fp32"  # (openvino-fp32-genai for -genai recipes when it is benched)
        assert sp["encoder"] > 0 and sp["decoder"] > 0 and sp["whole"] > 0
        status = json.loads((out / f"{name}.status.json").read_text())
        assert status["decode_settings"]["INFERENCE_NUM_THREADS"] == 2  # --threads honoured
        assert status["decode_settings"]["PERFORMANCE_HINT"] == "LATENCY"
        # the primitives OpenVINO executed, each resolved (dynamic shapes pick theirs at the first inference)
        assert "primitives" in status["isa_path"]["engine"] and "undef" not in status["isa_path"]["engine"], name
        assert status["isa_path"]["precision"] == ("int8" if "ptq" in name else "fp32"), name  # precision_hint f32
    assert rows["openvino-fp32"]["teacher_forced_agreement"] >= 0.999
    assert rows["openvino-fp32"]["encoder_rel_error"] < 1e-5
    assert rows["openvino-int8-ptq-genai"]["teacher_forced_agreement"] == rows["openvino-int8-ptq"][
        "teacher_forced_agreement"]  # same IR, same probes
    compiled = json.loads((out / "openvino-fp32.status.json").read_text())["compiled_properties"]
    assert compiled["encoder"]["INFERENCE_NUM_THREADS"] == "2" and compiled["decoder"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert "C++" in rows["openvino-int8-ptq-genai"]["decode_settings"]["loop"]
    # the -genai recipe runs the very IR of its base recipe (no second copy)
    ptq_genai = json.loads((out / "openvino-int8-ptq-genai.status.json").read_text())
    assert ptq_genai["manifest"]["weights_dir"] == str(artifacts["openvino-int8-ptq"].dir)
    assert rows["openvino-int8-ptq"]["size_mb"] < rows["openvino-fp32"]["size_mb"] / 2
    md = (out / "summary.md").read_text()
    assert "openvino-int8-ptq: per component: encoder" in md and "vs openvino-fp32" in md
