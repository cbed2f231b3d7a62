"""Where whisperopt keeps synthetic checkpoints, downloads and built artifacts."""

from __future__ import annotations

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


def data_dir() -> Path:
    return _usable(cache_dir() / "data")


def dir_size(path: Path) -> int:
    """Total bytes of regular files below ``path`` (symlinks not followed)."""
    total = 0
    for p in Path(path).rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total
