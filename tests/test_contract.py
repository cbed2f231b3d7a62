"""The recipe contract over the whole registry: what every recipe declares, and that every recipe of every installed
engine builds, validates and transcribes through the same calls (synthetic tiny, one real LibriSpeech utterance)."""

from __future__ import annotations

import pytest

from whisperopt.data import load_audio, load_dataset
from whisperopt.data.references import forced_length
from whisperopt.errors import WhisperoptError
from whisperopt.metrics.isa import PRECISIONS
from whisperopt.models.processor import load_processor
from whisperopt.recipes import all_recipes, baseline_recipe, get_recipe
from whisperopt.recipes.artifacts import build_artifact
from whisperopt.recipes.base import DecodeOptions, Option, Recipe, Runtime, Transcription

RECIPES = all_recipes()
# small calibration sets, as the engine tests use (so their artifacts are shared within a test session)
CHEAP = {"onnx-int8-static": {"calibration_size": "3"}, "openvino-int8-ptq": {"calibration_size": "2"},
         "openvino-int8-ptq-genai": {"calibration_size": "2"}}


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_declares_the_contract(name):
    recipe = RECIPES[name]
    assert isinstance(recipe, Recipe) and recipe.name == name
    assert recipe.engine and recipe.description and recipe.modules
    assert recipe.devices and set(recipe.devices) <= {"cpu", "cuda"}
    assert recipe.fidelity_floor is not None and 0 < recipe.fidelity_floor <= 1
    assert recipe.compute_precision in PRECISIONS  # the roofline's peak and the recorded ISA path
    assert all(isinstance(opt, Option) for opt in recipe.options.values())
    assert recipe.resolve_options({}) == recipe.defaults  # every default passes its own check
    for key, opt in recipe.options.items():
        if opt.choices:
            assert opt.default in opt.choices
            bad = max(opt.choices) + 1 if isinstance(opt.default, int) else "no-such-value"
            with pytest.raises(WhisperoptError, match=f"{name} option {key}: expected one of") as err:
                recipe.resolve_options({key: str(bad)})
            assert "\n" not in str(err.value)
    with pytest.raises(WhisperoptError, match="has no option"):
        recipe.resolve_options({"no_such_option": "1"})
    if recipe.shares_base_weights:
        assert recipe.base_recipe is not None
    if recipe.base_recipe is not None:
        assert isinstance(recipe.base_recipe, Recipe)
        recipe.base_recipe.resolve_options(recipe.base_options(recipe.defaults))
    if recipe.component_baseline is not None:
        assert recipe.component_baseline in RECIPES
        assert RECIPES[recipe.component_baseline].engine == recipe.engine


def test_one_baseline():
    assert [r.name for r in RECIPES.values() if r.baseline] == [baseline_recipe().name]
    assert baseline_recipe().devices == ("cpu", "cuda")


CPU_RECIPES = [n for n, r in RECIPES.items() if "cpu" in r.devices]
# the fast tier (`-m "not slow"`) builds the baseline and one converted engine; every other build is the slow tier's
FAST_BUILDS = {baseline_recipe().name, "ct2-int8"}


@pytest.fixture(scope="module")
def utterance(tiny_model, librispeech):
    u = load_dataset("librispeech:test-clean").limit(1).utterances[0]
    return load_audio(u.audio), forced_length(load_processor(tiny_model.path).tokenizer, u.text)


@pytest.mark.parametrize("name", [n if n in FAST_BUILDS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CPU_RECIPES])
def test_every_installed_recipe_builds_validates_and_transcribes(name, tiny_model, utterance):
    recipe = get_recipe(name)
    reason = recipe.unavailable_reason("cpu")
    if reason:
        pytest.skip(f"{name}: {reason}")
    artifact, _ = build_artifact(recipe, tiny_model.path, recipe.resolve_options(CHEAP.get(name)))
    validation = artifact.manifest["validation"]
    if recipe.baseline:
        assert "skipped" in validation
    else:  # the build check ran (here, or on the base artifact this recipe shares) and passed its floor
        assert validation["passed"] and validation["teacher_forced_agreement"] >= recipe.fidelity_floor
        assert validation["floor"] == recipe.fidelity_floor and validation["method"]
        assert ("inherited_from" in validation) == recipe.shares_base_weights
    assert recipe.size_bytes(artifact) > 0
    audio, n = utterance
    runtime = recipe.open(artifact, "cpu", 2)
    try:
        assert isinstance(runtime, Runtime) and isinstance(runtime.fidelity_method, str)
        (out,) = runtime.transcribe([audio], DecodeOptions(), [n])
        info = runtime.run_info()
        if not recipe.window_unsupported:  # the adaptive window decodes the same forced work on a shorter encoding
            runtime.window = "auto"
            (short,) = runtime.transcribe([audio], DecodeOptions(), [n])
    finally:
        runtime.close()
    assert isinstance(out, Transcription) and isinstance(out.text, str) and out.tokens
    assert isinstance(info, dict)
    if "not_comparable" not in info:  # the engine honours the forced decode length of a synthetic checkpoint
        assert len(out.tokens) == n
        if not recipe.window_unsupported:
            assert len(short.tokens) == n


ENGINE_NAMES = ("torch-fp32", "onnx-", "openvino-", "ct2-", "sherpa-")


def test_no_engine_name_outside_recipes():
    from pathlib import Path

    import whisperopt

    root = Path(whisperopt.__file__).parent
    found = [f"{path.relative_to(root)}:{i}" for sub in ("report", "bench", "transcribe", "cli")
             for path in (root / sub).rglob("*.py")
             for i, line in enumerate(path.read_text().splitlines(), 1) if any(n in line for n in ENGINE_NAMES)]
    assert not found, found


def test_the_default_recipes_are_the_registry_s():
    """The names commands run when not told (``recipes.BASELINE``, the bench's default lists) are registry recipes,
    and ``BASELINE`` is the one recipe declaring ``baseline``."""
    from whisperopt.recipes import (
        BASELINE,
        DEFAULT_BENCH_RECIPES,
        DEFAULT_LONG_RECIPES,
        baseline_recipe,
        parse_recipe_list,
    )

    assert baseline_recipe().name == BASELINE
    assert parse_recipe_list(DEFAULT_BENCH_RECIPES)[0].name == BASELINE
    assert parse_recipe_list(",".join(x.split(":")[0] for x in DEFAULT_LONG_RECIPES.split(",")))
