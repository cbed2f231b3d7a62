"""Build-once cache of recipe artifacts, each with a manifest (recipe, options, source model, library versions)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..cache import model_artifacts_dir, model_fingerprint
from ..errors import WhisperoptError
from ..files import atomic_dir, atomic_write_json, sha256_file
from .base import Artifact, Recipe
from .validation import validate_artifact

MANIFEST = "manifest.json"


def options_key(options: dict) -> str:
    if not options:
        return ""
    return hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]


def artifact_path(recipe: Recipe, model_dir: Path, options: dict) -> Path:
    """Where the artifact of these options lives: the registry recipe's name plus a key of its build options
    (runtime-only options such as ``window``, and a variant's ``@...`` suffix, share one artifact)."""
    build = recipe.build_options(options)
    name = recipe.artifact_name + (f"-{options_key(build)}" if build else "")
    return model_artifacts_dir(model_dir) / name


def file_table(artifact_dir: Path) -> dict[str, dict]:
    """Every file an artifact holds (its manifest aside): {relative path: {bytes, sha256}}, kept in the manifest."""
    artifact_dir = Path(artifact_dir)
    return {p.relative_to(artifact_dir).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(artifact_dir.rglob("*")) if p.is_file() and p.name != MANIFEST}


def damage(artifact_dir: Path, files: dict[str, dict], digests: bool = False) -> str | None:
    """Why the files of an artifact no longer match its manifest (missing, another size; with ``digests``, other
    bytes), or None. Sizes are checked on every load, digests on ``build`` and ``--verify``."""
    for rel, want in files.items():
        p = Path(artifact_dir) / rel
        if not p.is_file():
            return f"{rel} is missing"
        size = p.stat().st_size
        if size != want["bytes"]:
            return f"{rel} has {size} bytes, the build wrote {want['bytes']}"
        if digests and sha256_file(p) != want["sha256"]:
            return f"{rel} has other bytes than the build wrote (sha256 differs)"
    return None


def _read_manifest(path: Path) -> tuple[dict | None, str | None]:
    """(manifest, None), (None, None) when there is none, or (None, why) when it is unreadable."""
    manifest_file = path / MANIFEST
    if not manifest_file.exists():
        return None, None
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{MANIFEST} is unreadable ({type(exc).__name__})"
    if not isinstance(manifest, dict):
        return None, f"{MANIFEST} is not a manifest"
    return manifest, None


def inspect_artifact(recipe: Recipe, model_dir: Path, options: dict,
                     digests: bool = False) -> tuple[Artifact | None, str | None]:
    """(the cached artifact, None) if a complete, intact one exists for exactly this model and these options;
    (None, None) if there is none (or it is stale); (None, why) if it is damaged. A variant that shares its base's
    weights is as intact as that base."""
    path = artifact_path(recipe, model_dir, options)
    manifest, why = _read_manifest(path)
    if manifest is None:
        return None, why
    if manifest.get("model_fingerprint") != model_fingerprint(model_dir) or \
            manifest.get("options") != recipe.build_options(options):
        return None, None
    if "integrity" not in manifest:
        return None, "built by an older whisperopt without file sizes and digests"
    why = damage(path, manifest["integrity"], digests)
    if why is None and manifest.get("shared_artifact") and recipe.base_recipe is not None:
        base, base_why = inspect_artifact(recipe.base_recipe, model_dir, recipe.base_options(options), digests)
        why = base_why or (None if base is not None else f"its base {recipe.base_recipe.name} is missing")
    if why is not None:
        return None, why
    return Artifact(recipe.name, path, Path(model_dir), manifest, options), None


# manifest fields that describe one build, not the weights a shared artifact passes on
_OWN_FIELDS = {"recipe", "engine", "options", "source_model", "model_fingerprint", "build_seconds", "built_at",
               "versions", "weights_dir", "base_artifact", "integrity"}


def build_artifact(recipe: Recipe, model_dir: Path, options: dict, rebuild: bool = False, verify: bool = False,
                   log: Callable[[str], None] | None = None) -> tuple[Artifact, bool]:
    """Return (artifact, cache_hit). Builds into a temporary directory and renames it into place when complete.

    A recipe with a ``base_recipe`` gets that recipe's cached artifact (built first if missing); one that
    ``shares_base_weights`` is not built at all: its manifest points at the base artifact and inherits its fields
    (validation included). Every other build is checked by ``validation.validate_artifact`` before it is renamed
    into place.
    A cached artifact whose files no longer match its manifest (sizes always, digests with ``verify``) is rebuilt,
    saying why through ``log``; where it cannot be (a read-only cache), the error says so and names ``--rebuild``.
    """
    model_dir = Path(model_dir)
    damaged = None
    if not rebuild:
        cached, damaged = inspect_artifact(recipe, model_dir, options, digests=verify)
        if cached is not None:
            return cached, True
        if damaged and log:
            log(f"cached {recipe.name} is damaged ({damaged}); rebuilding it")
    try:
        return _build(recipe, model_dir, options, verify, log), False
    except WhisperoptError as exc:
        if damaged:
            raise WhisperoptError(f"cached {recipe.name} is damaged ({damaged}) and could not be rebuilt ({exc}); "
                                  f"run `whisperopt build --model <model> --recipes {recipe.name} --rebuild` with a writable "
                                  "WHISPEROPT_CACHE") from None
        raise


def _build(recipe: Recipe, model_dir: Path, options: dict, verify: bool, log) -> Artifact:
    base = None
    if recipe.base_recipe is not None:
        base, _ = build_artifact(recipe.base_recipe, model_dir, recipe.base_options(options), verify=verify, log=log)
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
            "recipe": recipe.artifact_name,
            "engine": recipe.engine,
            "options": recipe.build_options(options),
            "source_model": str(model_dir),
            "model_fingerprint": model_fingerprint(model_dir),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"whisperopt": __version__, **recipe.versions()},
            **extra,
        }
        if not recipe.shares_base_weights:
            manifest["validation"] = validate_artifact(recipe, Artifact(recipe.name, tmp, model_dir, manifest, options))
        manifest["build_seconds"] = round(time.perf_counter() - t0, 2)
        if manifest.get("weights_dir") == str(tmp):
            manifest["weights_dir"] = str(path)
        manifest["integrity"] = file_table(tmp)
        atomic_write_json(tmp / MANIFEST, manifest)
    return Artifact(recipe.name, path, model_dir, manifest, options)


def build_recipes(recipes: list[Recipe], model_dir: Path, given: dict[str, dict], rebuild: bool = False,
                  log: Callable[[str], None] = print, error: Callable[[str], None] = print) -> None:
    """``whisperopt build``: every recipe's artifact built (or an intact cached one reused: its digests checked), one
    line each through ``log``; every recipe's options (``given``: {recipe: {key: value}}) are checked before any
    build. A recipe that fails is one line through ``error`` and the others still build; then the failures are one
    error. Builds run here, on the CPU: a CUDA-only recipe is built for a GPU machine (its build check is skipped)."""
    options = {r.name: r.resolve_options(given.get(r.name)) for r in recipes}
    failed: list[str] = []
    for recipe in recipes:
        reason = recipe.unavailable_reason("cpu") if "cpu" in recipe.devices else None
        if reason:
            log(f"skip  {recipe.name}: {reason}")
            continue
        try:
            artifact, hit = build_artifact(recipe, model_dir, options[recipe.name], rebuild=rebuild, verify=True,
                                           log=log)
        except WhisperoptError as exc:
            error(f"failed {recipe.name}: {exc}")
            failed.append(recipe.name)
            continue
        except Exception as exc:  # an engine's own error: one line, and the other recipes still build
            error(f"failed {recipe.name}: {type(exc).__name__}: {exc}")
            failed.append(recipe.name)
            continue
        log(f"{'cached' if hit else 'built '} {recipe.name}: {artifact.dir} "
            f"({recipe.size_bytes(artifact) / 1024 / 1024:.1f} MB)")
    if failed:
        raise WhisperoptError(f"{len(failed)} recipe(s) failed to build: {', '.join(failed)}")
