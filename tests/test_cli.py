"""Bad input gives a one-line error, a non-zero exit and no traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import TEST_CLEAN


def run_cli(*args, env_extra=None):
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "whisperopt.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def assert_one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("whisperopt: error:"), proc.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def bad_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    first = sorted(TEST_CLEAN.rglob("*.flac"))[0]
    # unreadable audio
    (root / "text.flac").write_text("definitely not flac " * 100)
    (root / "unreadable.jsonl").write_text(json.dumps({"audio": "text.flac", "text": "hello"}) + "\n")
    # empty audio
    (root / "empty.wav").write_bytes(b"")
    (root / "empty.jsonl").write_text(json.dumps({"audio": "empty.wav", "text": "hello"}) + "\n")
    # an utterance without transcript
    shutil.copy(first, root / "a.flac")
    (root / "notext.jsonl").write_text(json.dumps({"audio": "a.flac"}) + "\n")
    (root / "file").write_text("x")
    return root


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--model", "synthetic:huge"], "unknown Whisper size"),
        (["--model", "nonsense-model"], "unknown model"),
        (["--model", "openai/whisper-tiny"], "cannot download openai/whisper-tiny"),
        (["--recipes", "torch-fp33"], "unknown recipe 'torch-fp33'"),
        (["--dataset", "/no/such/dir"], "dataset not found"),
        (["--limit", "0"], "--limit must be a positive"),
        (["--dataset", "{root}/unreadable.jsonl"], "text.flac"),
        (["--dataset", "{root}/empty.jsonl"], "empty audio file"),
        (["--dataset", "{root}/notext.jsonl"], "without transcript"),
        (["--out", "{root}/file/results"], "not writable"),
        (["--option", "torch-fp32:foo=1"], "has no option foo"),
    ],
)
def test_bad_bench_input(args, fragment, bad_dirs, tiny_model, librispeech):
    base = {"--model": "synthetic:tiny", "--recipes": "torch-fp32", "--dataset": str(TEST_CLEAN), "--limit": "1",
            "--out": str(bad_dirs / "out")}
    given = dict(zip(args[::2], [a.replace("{root}", str(bad_dirs)) for a in args[1::2]]))
    base.update(given)
    argv = ["bench"] + [x for kv in base.items() for x in kv]
    assert_one_line_error(run_cli(*argv), fragment)


def test_report_of_missing_results(tmp_path):
    assert_one_line_error(run_cli("report", str(tmp_path)), "no benchmark results")


def test_recipes_json(capsys):
    """`recipes --json`: one JSON document and nothing else on stdout; every registry recipe with its availability
    here and its option table read from its Option objects (so an option added later is listed by itself)."""
    from whisperopt.cli import main
    from whisperopt.recipes import all_recipes

    assert main(["recipes", "--json", "--device", "cpu"]) == 0
    records = json.loads(capsys.readouterr().out)
    registry = all_recipes()
    assert [r["name"] for r in records] == list(registry)
    by_name = {r["name"]: r for r in records}
    for r in records:
        recipe = registry[r["name"]]
        assert (r["engine"], r["description"], r["devices"]) == (recipe.engine, recipe.description, list(recipe.devices))
        assert r["available"] is (r["unavailable_reason"] is None)
        assert [(o["name"], o["default"], o["choices"]) for o in r["options"]] == \
            [(k, o.default, list(o.choices)) for k, o in recipe.options.items()]
    assert by_name["torch-fp32"]["available"] and by_name["torch-fp16"]["unavailable_reason"] == "needs CUDA, running on CPU"
    isa = next(o for o in by_name["onnx-int8-dynamic"]["options"] if o["name"] == "isa")
    # which recipes take window=auto: those whose engine does not refuse it
    assert by_name["torch-fp32"]["window_unsupported"] is None and by_name["ct2-int8-fw-defaults"]["window_unsupported"]
    assert isa["default"] == "auto" and "avx512_vnni" in isa["choices"]


def test_recipes_and_models_commands(tiny_model):
    proc = run_cli("recipes", "--device", "cpu")
    assert proc.returncode == 0 and "torch-int8-dynamic" in proc.stdout and "needs CUDA" in proc.stdout
    proc = run_cli("models")
    assert proc.returncode == 0 and "synthetic:tiny" in proc.stdout
