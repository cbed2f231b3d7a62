"""Turn a ``--model`` argument into a local Hugging Face Whisper directory.

Accepted forms:
  * ``synthetic:<size>``      seeded random weights of a published architecture (offline, see synthetic.py)
  * a local directory         any Hugging Face Whisper checkpoint (config.json with model_type "whisper")
  * ``/path/model.pt``        an openai-whisper checkpoint, converted once to the Hugging Face layout
  * ``org/name`` or a size    a hub id (``tiny`` means ``openai/whisper-tiny``), downloaded with huggingface_hub
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..cache import models_dir
from ..errors import WhisperoptError
from .sizes import SIZES, get_dims
from .synthetic import ensure_synthetic, is_synthetic

HUB_PATTERNS = ["*.json", "*.txt", "*.safetensors", "*.model", "*.tiktoken"]


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user wrote
    path: Path  # local Hugging Face directory
    synthetic: bool  # random weights: accuracy metrics are meaningless

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


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve ``spec`` to a local directory (building, converting or downloading as needed)."""
    if not spec or not spec.strip():
        raise WhisperoptError("empty model name")
    spec = spec.strip()
    if spec.startswith("synthetic:"):
        size = spec.split(":", 1)[1]
        get_dims(size)  # validates the name
        return ResolvedModel(spec, ensure_synthetic(size), True)
    path = Path(spec).expanduser()
    if path.is_dir():
        _check_hf_dir(path)
        return ResolvedModel(spec, path.resolve(), is_synthetic(path))
    if path.suffix == ".pt":
        if not path.is_file():
            raise WhisperoptError(f"model file not found: {spec}")
        return ResolvedModel(spec, _convert_openai(path), False)
    if path.exists():
        raise WhisperoptError(f"{spec} is neither a model directory nor an openai-whisper .pt checkpoint")
    if spec in SIZES:
        return ResolvedModel(spec, _download(SIZES[spec].hub_id), False)
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and os.sep not in spec.split("/")[0]:
        return ResolvedModel(spec, _download(spec), False)
    raise WhisperoptError(
        f"unknown model {spec!r}: give a hub id (openai/whisper-tiny), a size ({', '.join(SIZES)}), "
        f"a local Hugging Face directory, an openai-whisper .pt file, or synthetic:<size>"
    )
