"""Build-once cache of recipe artifacts, each with a manifest (recipe, options, source model, library versions)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..cache import artifacts_dir
from ..errors import WhisperoptError
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


def artifact_path(recipe: Recipe, model_dir: Path, options: dict) -> Path:
    name = recipe.name + (f"-{options_key(options)}" if options else "")
    return artifacts_dir() / f"{Path(model_dir).name}-{model_fingerprint(model_dir)}" / name


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


def build_artifact(recipe: Recipe, model_dir: Path, options: dict, rebuild: bool = False) -> tuple[Artifact, bool]:
    """Return (artifact, cache_hit). Builds into a temporary directory and renames it into place when complete."""
    if not rebuild:
        cached = load_artifact(recipe, model_dir, options)
        if cached is not None:
            return cached, True
    path = artifact_path(recipe, model_dir, options)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{recipe.name}-", dir=str(path.parent)))
    t0 = time.perf_counter()
    try:
        extra = recipe.build(Path(model_dir), tmp, options) or {}
        manifest = {
            "recipe": recipe.name,
            "engine": recipe.engine,
            "options": options,
            "source_model": str(model_dir),
            "model_fingerprint": model_fingerprint(model_dir),
            "build_seconds": round(time.perf_counter() - t0, 2),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"whisperopt": __version__, **recipe.versions()},
            **extra,
        }
        if manifest.get("weights_dir") == str(tmp):
            manifest["weights_dir"] = str(path)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except WhisperoptError:
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Artifact(recipe.name, path, Path(model_dir), manifest, options), False
