"""Dataset names: what ``--dataset`` accepts, dispatched to the module that loads each kind (its own module so that
``datasets`` and ``longform`` need not import each other)."""

from __future__ import annotations

from pathlib import Path

from ..errors import WhisperoptError
from .datasets import (
    LIBRISPEECH_SPLITS,
    Dataset,
    download_librispeech,
    find_librispeech_split,
    load_librispeech_dir,
    load_manifest,
)
from .longform import load_longform

#: the data every calibration, validation and tuning step reads: never test data
DEV_DATASET = "librispeech:dev-clean"


def load_dataset(spec: str) -> Dataset:
    """``librispeech:<split>``, ``librispeech-long:<split>[:hard]`` (data/longform.py), a LibriSpeech directory, or
    a ``.jsonl`` manifest."""
    if spec.startswith("librispeech-long:"):
        return load_longform(spec)
    if spec.startswith("librispeech:"):
        split = spec.split(":", 1)[1]
        if split not in LIBRISPEECH_SPLITS:
            raise WhisperoptError(f"unknown LibriSpeech split {split!r}; known: {', '.join(LIBRISPEECH_SPLITS)}")
        root = find_librispeech_split(split) or download_librispeech(split)
        return load_librispeech_dir(root, name=f"librispeech-{split}")
    path = Path(spec).expanduser()
    if path.suffix in (".jsonl", ".json") and path.is_file():
        return load_manifest(path)
    if path.is_dir():
        return load_librispeech_dir(path)
    raise WhisperoptError(f"dataset not found: {spec} (give librispeech:<split>, librispeech-long:<split>[:hard], a "
                          "LibriSpeech directory or a .jsonl manifest)")
