"""Build-once cache of recipe artifacts, each with a manifest (recipe, options, source model, library versions)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from .. import __version__
from ..cache import artifacts_dir
from ..files import atomic_dir, atomic_write_json
from .base import Artifact, Recipe

MANIFEST = "manifest.json"


def model_fingerprint(model_dir: Path) -> str:
    """Identity of a model directory: its config plus the names, sizes and mtimes of its weight files."""
    h = hashlib.sha1()
    model_dir = Path(model_dir)
    h.update((model_dir / "config.json").read_bytes())
    for p in sorted(model_dir.iterdir()):
        if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def options_key(options: dict) -> str:
    if not options:
        return ""
    return hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]


def model_artifacts_dir(model_dir: Path) -> Path:
    """The cache directory of everything built from (or computed on) one model."""
    return artifacts_dir() / f"{Path(model_dir).name}-{model_fingerprint(model_dir)}"


def artifact_path(recipe: Recipe, model_dir: Path, options: dict) -> Path:
    name = recipe.name + (f"-{options_key(options)}" if options else "")
    return model_artifacts_dir(model_dir) / name


def load_artifact(recipe: Recipe, model_dir: Path, options: dict) -> Artifact | None:
    """The cached artifact if a complete one exists for exactly this model and these options."""
    path = artifact_path(recipe, model_dir, options)
    manifest_file = path / MANIFEST
    if not manifest_file.exists():
        return None
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("model_fingerprint") != model_fingerprint(model_dir) or manifest.get("options") != options:
        return None
    return Artifact(recipe.name, path, Path(model_dir), manifest, options)


# manifest fields that describe one build, not the weights a shared artifact passes on
_OWN_FIELDS = {"recipe", "engine", "options", "source_model", "model_fingerprint", "build_seconds", "built_at",
               "versions", "weights_dir", "base_artifact"}


def build_artifact(recipe: Recipe, model_dir: Path, options: dict, rebuild: bool = False) -> tuple[Artifact, bool]:
    """Return (artifact, cache_hit). Builds into a temporary directory and renames it into place when complete.

    A recipe with a ``base_recipe`` gets that recipe's cached artifact (built first if missing); one that
    ``shares_base_weights`` is not built at all: its manifest points at the base artifact and inherits its fields
    (validation included). Every other build is checked by ``recipe.validate`` before it is renamed into place.
    """
    model_dir = Path(model_dir)
    if not rebuild:
        cached = load_artifact(recipe, model_dir, options)
        if cached is not None:
            return cached, True
    base = None
    if recipe.base_recipe is not None:
        base, _ = build_artifact(recipe.base_recipe, model_dir, recipe.base_options(options))
    path = artifact_path(recipe, model_dir, options)
    t0 = time.perf_counter()
    with atomic_dir(path) as tmp:
        if recipe.shares_base_weights:
            extra = {k: v for k, v in base.manifest.items() if k not in _OWN_FIELDS}
            extra.update(weights_dir=str(base.weights_dir), shared_artifact=base.recipe)
            if isinstance(extra.get("validation"), dict):
                extra["validation"] = {**extra["validation"], "inherited_from": base.recipe}
        else:
            extra = recipe.build(model_dir, tmp, options, base) or {}
            if base is not None:
                extra.setdefault("base_artifact", {"recipe": base.recipe, "dir": str(base.dir)})
        manifest = {
            "recipe": recipe.name,
            "engine": recipe.engine,
            "options": options,
            "source_model": str(model_dir),
            "model_fingerprint": model_fingerprint(model_dir),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"whisperopt": __version__, **recipe.versions()},
            **extra,
        }
        if not recipe.shares_base_weights:
            manifest["validation"] = recipe.validate(Artifact(recipe.name, tmp, model_dir, manifest, options))
        manifest["build_seconds"] = round(time.perf_counter() - t0, 2)
        if manifest.get("weights_dir") == str(tmp):
            manifest["weights_dir"] = str(path)
        atomic_write_json(tmp / MANIFEST, manifest)
    return Artifact(recipe.name, path, model_dir, manifest, options), False
