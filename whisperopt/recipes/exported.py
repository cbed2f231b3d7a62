"""Run an exported model (``whisperopt export``): its recipe's artifact exactly as it was benchmarked, no cache.

An exported directory holds the checkpoint's tokenizer and config files (the ``model_dir`` every runtime reads them
from), ``whisperopt_export.json`` and the artifact in its own folder with the manifest it was built with (every
file's size and sha256). Loading it checks the whole folder against the export's file table first
(``models.export_record.check_export``: the table's digest, every size, no unlisted file; sha256 digests with
``verify``), then the artifact against its manifest like the cache does; the recipe and options are the recorded
ones, so a different ``--recipe`` or ``--option`` is an error, not a build.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import WhisperoptError
from ..files import confined, read_json
from ..models.export_record import check_export, read_export
from .artifacts import MANIFEST, damage
from .base import Artifact, Recipe


def exported_artifact(model_dir: Path, recipe: Recipe | str | None = None, options: dict | None = None,
                      verify: bool = False) -> tuple[Recipe, Artifact]:
    """(recipe, artifact) of the exported directory ``model_dir``. ``recipe`` / ``options``, when given, must be the
    exported ones (the artifact cannot be rebuilt here); ``verify`` checks sha256 digests, not only sizes."""
    from . import get_recipe

    model_dir = Path(model_dir)
    record = read_export(model_dir)
    check_export(model_dir, record, digests=verify)  # before any file of it is read by an engine
    name = record["recipe"]
    given = recipe.name if isinstance(recipe, Recipe) else recipe
    if given and given != name:
        raise WhisperoptError(f"{model_dir} is an export of recipe {name}, not {given}: leave --recipe out (or give "
                              f"--recipe {name}), or export {given} from the benchmark results")
    r = recipe if isinstance(recipe, Recipe) else get_recipe(name)
    recorded = record.get("options") or {}
    if options is not None and r.build_options(r.resolve_options(options)) != r.build_options(recorded):
        raise WhisperoptError(f"{model_dir} was exported with {name} options {recorded or 'none'}; other --option "
                              "values need another build: export it again from a benchmark that used them")
    adir = confined(model_dir, record["artifact"])
    if not (adir / MANIFEST).is_file():
        raise WhisperoptError(f"{adir / MANIFEST} is missing (the exported artifact is incomplete); export the model "
                              "again")
    manifest = read_json(adir / MANIFEST, "exported artifact manifest", "export the model again")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("integrity"), dict):
        raise WhisperoptError(f"{adir / MANIFEST} has no file table; export the model again")
    if manifest.get("recipe") != name:
        raise WhisperoptError(f"{adir / MANIFEST} is a {manifest.get('recipe')!r} artifact, but "
                              f"{model_dir.name}/whisperopt_export.json says {name}; export the model again")
    listed = record["files"]
    if any(listed.get(f"{record['artifact']}/{rel}") != entry for rel, entry in manifest["integrity"].items()):
        raise WhisperoptError(f"{adir / MANIFEST} and {model_dir.name}/whisperopt_export.json list other files for the "
                              "artifact; export the model again")
    why = damage(adir, manifest["integrity"])  # its digests are the table's, which check_export hashed with verify
    if why:
        raise WhisperoptError(f"exported artifact {adir} is damaged ({why}); export the model again")
    return r, Artifact(name, adir, model_dir, manifest, dict(recorded))
