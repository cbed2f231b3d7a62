"""Where whisperopt keeps synthetic checkpoints, downloads and built artifacts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import WhisperoptError


def cache_root() -> Path:
    """``$WHISPEROPT_CACHE`` or ``~/.cache/whisperopt``, as a path (nothing is created or checked)."""
    root = os.environ.get("WHISPEROPT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "whisperopt"


def _usable(path: Path) -> Path:
    """``path`` as a directory: an existing one is used as it is (a read-only cache still serves what it holds), a
    missing one is created; one that cannot be is a one-line error naming ``WHISPEROPT_CACHE``."""
    if path.is_dir():
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WhisperoptError(f"cache directory {path} cannot be created ({exc.strerror or exc}); set "
                              "WHISPEROPT_CACHE to a writable directory") from None
    return path


def cache_dir() -> Path:
    """Root cache directory: ``$WHISPEROPT_CACHE`` or ``~/.cache/whisperopt``."""
    return _usable(cache_root())


def models_dir() -> Path:
    return _usable(cache_dir() / "models")


def artifacts_dir() -> Path:
    return _usable(cache_dir() / "artifacts")


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


def model_artifacts_dir(model_dir: Path) -> Path:
    """The cache directory of everything built from (or computed on) one model: its recipes' artifacts
    (``recipes.artifacts``) and the baseline's stored fidelity references (``recipes.validation``)."""
    return artifacts_dir() / f"{Path(model_dir).name}-{model_fingerprint(model_dir)}"


def data_dir() -> Path:
    return _usable(cache_dir() / "data")


def dir_size(path: Path) -> int:
    """Total bytes of regular files below ``path`` (symlinks not followed)."""
    total = 0
    for p in Path(path).rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total
