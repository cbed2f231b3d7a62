"""Where whisperopt keeps synthetic checkpoints, downloads and built artifacts."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root cache directory: ``$WHISPEROPT_CACHE`` or ``~/.cache/whisperopt``."""
    root = os.environ.get("WHISPEROPT_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "whisperopt"
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifacts_dir() -> Path:
    path = cache_dir() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    path = cache_dir() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def dir_size(path: Path) -> int:
    """Total bytes of regular files below ``path`` (symlinks not followed)."""
    total = 0
    for p in Path(path).rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total
