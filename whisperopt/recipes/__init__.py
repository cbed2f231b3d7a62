"""Recipe registry. Adding an engine: write ``recipes/<engine>.py`` exposing ``RECIPES`` and add it to ENGINE_MODULES."""

from __future__ import annotations

import importlib
import re

from ..errors import WhisperoptError
from ..models.resolve import exported_recipe
from .base import Artifact, DecodeOptions, Recipe, Runtime, Transcription

ENGINE_MODULES = [
    "whisperopt.recipes.pytorch",
    "whisperopt.recipes.onnxruntime",
    "whisperopt.recipes.onnxruntime_static",
    "whisperopt.recipes.ctranslate2",
    "whisperopt.recipes.openai_whisper",
    "whisperopt.recipes.sherpa_onnx",
    "whisperopt.recipes.openvino",
    "whisperopt.recipes.openvino_ptq",
    "whisperopt.recipes.whispercpp",
    "whisperopt.recipes.onnxruntime_genai",
]

# What a command runs when it is not told which recipe: the names live here, in the registry, not in the commands.
BASELINE = "torch-fp32"  # the name of the one recipe declaring ``baseline`` (tests/test_contract.py checks they agree)
DEFAULT_BENCH_RECIPES = f"{BASELINE},torch-int8-dynamic,torch-bf16"  # `bench` without --recipes
# the long-form bench: the baseline in its reference mode, one fast engine in every mode, faster-whisper as its users
# run it
DEFAULT_LONG_RECIPES = f"{BASELINE}:sequential,ct2-int8:sequential+batched+vad,ct2-int8-fw-batched:native"


def all_recipes() -> dict[str, Recipe]:
    recipes: dict[str, Recipe] = {}
    for module in ENGINE_MODULES:
        for recipe in importlib.import_module(module).RECIPES:
            recipes[recipe.name] = recipe
    return recipes


# a variant's key and value become part of file names (rows, status, logs): letters, digits and . _ + - only
_NAME_PART = re.compile(r"[A-Za-z0-9_.+-]+")


def get_recipe(name: str) -> Recipe:
    """A registry recipe, or a named variant ``R@key=value[@key=value]`` (R with those options fixed: a bench row of
    its own, e.g. ``torch-fp32@window=auto`` beside ``torch-fp32``)."""
    base, *fixed = name.split("@")
    recipes = all_recipes()
    if base not in recipes:
        raise WhisperoptError(f"unknown recipe {base!r}; known recipes: {', '.join(recipes)}")
    if not fixed:
        return recipes[base]
    preset = {}
    for item in fixed:
        key, sep, value = item.partition("=")
        if not sep or not _NAME_PART.fullmatch(key) or not _NAME_PART.fullmatch(value) or key in preset:
            raise WhisperoptError(f"recipe {name!r}: expected {base}@KEY=VALUE[@KEY=VALUE] (letters, digits, . _ + -; "
                                  f"each key once), got {'@' + item!r}")
        preset[key] = value
    return recipes[base].variant(preset)


def find_recipe(name: str) -> Recipe | None:
    """``get_recipe``, or None for a name that is no recipe (results written by another version)."""
    try:
        return get_recipe(name)
    except WhisperoptError:
        return None


def baseline_recipe() -> Recipe:
    """The registry's reference recipe (``Recipe.baseline``): every speed-up, ΔWER and fidelity figure is against it."""
    found = [r for r in all_recipes().values() if r.baseline]
    if len(found) != 1:
        raise WhisperoptError(f"the recipe registry must declare exactly one baseline, found {len(found)}")
    return found[0]


def model_recipe(model, name: str | None = None) -> Recipe:
    """The recipe a command runs on ``model``: ``name`` (a recipe or a named variant) as given; else the recipe of a
    ``whisperopt export`` directory; else the baseline."""
    name = name or exported_recipe(model)
    return get_recipe(name) if name else baseline_recipe()


def recipe_record(recipe: Recipe, device: str) -> dict:
    """One recipe for ``whisperopt recipes --json``: read generically from the recipe object and its ``Option`` table
    (so an option any engine adds later is listed by itself)."""
    reason = recipe.unavailable_reason(device)
    return {"name": recipe.name, "engine": recipe.engine, "description": recipe.description,
            "devices": list(recipe.devices), "available": reason is None, "unavailable_reason": reason,
            "compute_precision": recipe.compute_precision,
            "window_unsupported": recipe.window_unsupported,
            "options": [{"name": key, "default": opt.default, "choices": list(opt.choices),
                         **({"help": opt.help} if opt.help else {})}
                        for key, opt in recipe.options.items()]}


def parse_recipe_list(text: str) -> list[Recipe]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise WhisperoptError("no recipe given")
    if len(set(names)) != len(names):
        raise WhisperoptError(f"recipe listed twice in {text!r}")
    return [get_recipe(n) for n in names]


__all__ = ["BASELINE", "DEFAULT_BENCH_RECIPES", "DEFAULT_LONG_RECIPES", "Artifact", "DecodeOptions", "Recipe", "Runtime",
           "Transcription", "all_recipes", "baseline_recipe", "find_recipe", "get_recipe", "model_recipe",
           "parse_recipe_list", "recipe_record"]
