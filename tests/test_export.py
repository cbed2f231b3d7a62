"""whisperopt export: one benchmarked recipe as a self-contained directory with a model card, and --model on it.

The exports come from the session's real-weights bench (conftest.py ``real_bench``: trained tiny.en, the first 14 test-clean
utterances), so the card's numbers are real measurements. The exported directories run with an empty cache, which
shows they need nothing else.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from whisperopt.cli import main

from .conftest import REAL_BENCH_UTTERANCES

UTTERANCE = "1089-134686-0000"  # the first test-clean utterance (10.4 s)
EXPORTED = ("ct2-int8", "torch-fp32")


def _hypotheses(results: Path, recipe: str) -> dict[str, str]:
    from whisperopt.bench.results import read_rows

    return {r["id"]: r["hypothesis"] for r in read_rows(results / f"{recipe}.rows.jsonl")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _words(text: str) -> str:
    return " ".join(text.split())


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("whisperopt: error: ") and "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def exports(real_bench, tmp_path_factory) -> dict[str, Path]:
    """The recommended recipe, ct2-int8 (a CTranslate2 model, no fp32 weights) and torch-fp32 (the checkpoint itself)
    exported from the real bench."""
    results, _, _ = real_bench
    root = tmp_path_factory.mktemp("exports")
    assert main(["export", str(results), "--recommended", "--out", str(root / "recommended")]) == 0
    out = {"recommended": root / "recommended"}
    for name in EXPORTED:
        assert main(["export", str(results), "--recipe", name, "--out", str(root / name)]) == 0
        out[name] = root / name
    return out


@pytest.mark.slow
def test_card_holds_the_measured_numbers(real_bench, exports):
    from huggingface_hub import ModelCard

    from whisperopt.report.columns import BY_KEY

    _, summary, rows = real_bench
    name = summary["recommendation"]["recipe"]
    record = json.loads((exports["recommended"] / "whisperopt_export.json").read_text())
    assert record["recipe"] == name and record["benchmark"]["recommended"]
    row, base = rows[name], rows["torch-fp32"]
    assert record["benchmark"]["row"] == row  # the summary row as it is
    # the WER recomputed from the exported per-utterance rows (corpus rate of the word error counts) is the card's
    counts = [json.loads(line)["words"] for line in (exports["recommended"] / "benchmark" / f"{name}.rows.jsonl")
              .read_text().splitlines()]
    errors = sum(c["substitutions"] + c["deletions"] + c["insertions"] for c in counts)
    assert 100 * errors / sum(c["substitutions"] + c["deletions"] + c["hits"] for c in counts) == pytest.approx(row["wer"])

    card = ModelCard.load(exports["recommended"] / "README.md")
    data = card.data
    assert data.license == "mit" and data.base_model == "openai/whisper-tiny.en" and data.language == ["en"]
    assert data.pipeline_tag == "automatic-speech-recognition" and data.library_name == "whisperopt"
    assert {"whisper", "whisperopt", row["engine"], name} <= set(data.tags)
    wer, cer = data.eval_results
    assert (wer.metric_type, wer.metric_value, cer.metric_type, cer.metric_value) == \
        ("wer", round(row["wer"], 2), "cer", round(row["cer"], 2))
    assert wer.dataset_type == "openslr/librispeech_asr" and (wer.dataset_config, wer.dataset_split) == ("clean", "test")
    assert f"first {REAL_BENCH_UTTERANCES} utterances" in wer.dataset_name
    lines = card.text.splitlines()
    table = [(f"| **{name}** (this model)", row)] + ([("| torch-fp32 (baseline)", base)] if name != "torch-fp32" else [])
    for label, r in table:  # each figure as the report formats it, in its column
        line = next(x for x in lines if x.startswith(label))
        for key in ("wer", "wer_ci", "wer_delta", "wer_delta_ci", "cer", "speedup", "latency_p50_s", "rtfx",
                    "peak_ram_mb", "size_mb", "compression", "teacher_forced_agreement"):
            assert BY_KEY[key].text(r) is not None and f"| {BY_KEY[key].text(r)} |" in line, (key, line)
    lo, hi = row["wer_ci"]
    assert f"**WER {row['wer']:.2f} %** (95 % CI {lo:.2f}-{hi:.2f}; CER {row['cer']:.2f} %)" in card.text
    if name != "torch-fp32":
        lo, hi = row["wer_delta_ci"]
        assert f"ΔWER {row['wer_delta']:+.2f} percentage points** against torch-fp32 ({base['wer']:.2f} %)" in card.text
        assert f"[{lo:+.2f}, {hi:+.2f}]" in card.text and f"{row['speedup']:.2f}× torch-fp32's speed" in card.text
    assert f"**Recommended** by whisperopt in this run: {summary['recommendation']['criterion']}" in card.text
    env = summary["environment"]
    assert env["cpu"]["model"] in card.text and f"torch={env['versions']['torch']}" in card.text
    assert "beam_size=1" in card.text and f"--model {exports['recommended'].name}" in card.text


@pytest.mark.slow
def test_synthetic_weights_get_no_wer(real_bench, exports):
    """A card never states a WER for random weights (it would measure nothing), and says why."""
    from whisperopt.export import model_card

    record = json.loads((exports["ct2-int8"] / "whisperopt_export.json").read_text())
    record["source_model"].update(synthetic=True, hub_id=None, license=None)
    for row in (record["benchmark"]["row"], record["benchmark"]["baseline_row"]):
        row.update(dict.fromkeys(("wer", "wer_ci", "wer_delta", "wer_delta_ci", "cer", "cer_ci"), None))
    card = model_card(record, "x")
    assert card.data.eval_results is None and card.data.license is None and "synthetic-weights" in card.data.tags
    assert "**Synthetic weights**" in card.text and "WER and CER measure nothing" in card.text


@pytest.mark.slow
def test_exported_files_are_complete_copies_with_their_digests(real_bench, exports):
    _, _, rows = real_bench
    for d in exports.values():
        record = json.loads((d / "whisperopt_export.json").read_text())
        for rel, entry in record["files"].items():
            p = d / rel
            assert p.is_file() and not p.is_symlink(), rel
            assert (p.stat().st_size, _sha256(p)) == (entry["bytes"], entry["sha256"]), rel
        on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file() or p.is_symlink()}
        assert on_disk == set(record["files"]) | {"README.md", "whisperopt_export.json"}
        manifest = json.loads((d / "artifact" / "manifest.json").read_text())
        assert manifest["recipe"] == record["recipe"] and "weights_dir" not in manifest
        assert {f"artifact/{k}": v for k, v in manifest["integrity"].items()} == \
            {k: v for k, v in record["files"].items() if k.startswith("artifact/") and k != "artifact/manifest.json"}
        # the artifact files are the bytes the bench measured (the digests its build recorded)
        built = rows[record["recipe"]]["manifest"].get("integrity") or {}
        assert all(manifest["integrity"][k]["sha256"] == v["sha256"] for k, v in built.items())
        assert (d / "tokenizer.json").is_file() and (d / "preprocessor_config.json").is_file()
    ct2 = exports["ct2-int8"]
    assert (ct2 / "artifact" / "model.bin").is_file() and not list(ct2.rglob("*.safetensors"))  # no fp32 weights
    assert (exports["torch-fp32"] / "artifact" / "model.safetensors").is_file()  # the checkpoint is the artifact
    assert not (exports["torch-fp32"] / "model.safetensors").exists()


@pytest.mark.slow
def test_transcribe_an_export_with_an_empty_cache(real_bench, exports, librispeech, tmp_path, monkeypatch):
    """Greedy, no timestamps, fixed language: the exported artifact transcribes as it did in the bench, with nothing
    in the cache (no build, no conversion, no source checkpoint)."""
    results, _, _ = real_bench
    flac = librispeech / "LibriSpeech" / "test-clean" / "1089" / "134686" / f"{UTTERANCE}.flac"
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    monkeypatch.setenv("WHISPEROPT_CACHE", str(empty))
    for name in EXPORTED:
        out = tmp_path / name
        assert main(["transcribe", str(flac), "--model", str(exports[name]), "--language", "en", "--beam-size", "1",
                     "--temperature-increment-on-fallback", "0", "--without-timestamps",
                     "--no-condition-on-previous-text", "-f", "txt", "-o", str(out)]) == 0
        assert _words((out / f"{UTTERANCE}.txt").read_text()) == _words(_hypotheses(results, name)[UTTERANCE]), name
    assert not [p for p in empty.rglob("*") if p.is_file()]  # nothing was built, converted or downloaded


@pytest.mark.slow
def test_the_cards_engine_example_runs(real_bench, exports, librispeech, tmp_path):
    """The card's 'engine's own API' code, run as it is written (no whisperopt import), transcribes the utterance."""
    results, _, _ = real_bench
    flac = librispeech / "LibriSpeech" / "test-clean" / "1089" / "134686" / f"{UTTERANCE}.flac"
    shutil.copy(flac, tmp_path / "audio.flac")
    for name in EXPORTED:
        text = (exports[name] / "README.md").read_text()
        block = text.split("With the engine's own API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
        assert "whisperopt" not in block
        script = tmp_path / f"{name}.py"
        script.write_text(block.replace(f"root = {exports[name].name!r}", f"root = {str(exports[name])!r}"))
        run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        said, hyp = _words(run.stdout.strip().splitlines()[-1]).split(), _words(_hypotheses(results, name)[UTTERANCE])
        if name == "torch-fp32":  # transformers' own processor is the shared front end
            assert " ".join(said) == hyp
        else:  # faster-whisper's own front end pads features, not audio: a word may differ (README: One front end)
            same = sum(a == b for a, b in zip(said, hyp.split()))
            assert same >= 0.8 * len(hyp.split()), (said, hyp)


@pytest.mark.slow
def test_bench_an_export(real_bench, exports, tmp_path, monkeypatch, capsys):
    """bench --model EXPORTED runs the exported recipe alone: absolute WER, no baseline to compare with."""
    results, _, _ = real_bench
    monkeypatch.setenv("WHISPEROPT_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "res"
    assert main(["bench", "--model", str(exports["ct2-int8"]), "--limit", "3", "--threads", "2", "--out", str(out)]) == 0
    assert "no torch-fp32 baseline" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    [row] = summary["recipes"]
    assert (row["recipe"], row["status"], row["utterances"]) == ("ct2-int8", "ok", 3)
    assert row["wer"] is not None and row["wer_delta"] is None and row["speedup"] is None
    assert row["teacher_forced_agreement"] is None and summary["config"]["fidelity_utterances"] == 0
    mine, theirs = _hypotheses(out, "ct2-int8"), _hypotheses(results, "ct2-int8")
    assert len(mine) == 3 and all(mine[i] == theirs[i] for i in mine)  # the same bytes decode the same text
    assert main(["bench", "--model", str(exports["ct2-int8"]), "--recipes", "torch-fp32", "--limit", "1", "--out",
                 str(tmp_path / "other")]) == 2
    assert "export of ct2-int8" in _error(capsys)


def _doctored(results: Path, tmp_path: Path, edit) -> Path:
    """A copy of the results' summary and ct2-int8 files, changed by ``edit(summary, status)``."""
    d = tmp_path / f"doctored-{len(list(tmp_path.glob('doctored-*')))}"
    d.mkdir()
    summary = json.loads((results / "summary.json").read_text())
    status = json.loads((results / "ct2-int8.status.json").read_text())
    edit(summary, status)
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "ct2-int8.status.json").write_text(json.dumps(status))
    shutil.copy(results / "ct2-int8.rows.jsonl", d)
    return d


def _failed(summary, status):
    next(r for r in summary["recipes"] if r["recipe"] == "ct2-int8").update(status="failed", reason="killed")


def _no_recommendation(summary, status):
    summary["recommendation"].update(recipe=None, reason="no recipe meets the criterion")


def _gone(summary, status):
    status["artifact_dir"] = "/nonexistent/ct2-int8"
    status["manifest"]["source_model"] = "/nonexistent/model"


def _rebuilt(summary, status):
    entry = status["manifest"]["integrity"]["model.bin"]
    entry["sha256"] = "0" * 64


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(real_bench, exports, tmp_path, capsys):
    results, _, _ = real_bench
    out, flac = str(tmp_path / "out"), _any_flac()
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not an export")
    cases = [
        (["export", str(tmp_path / "missing"), "--recipe", "ct2-int8", "--out", out], "does not exist"),
        (["export", str(empty), "--recipe", "ct2-int8", "--out", out], "no summary.json"),
        (["export", str(results), "--recipe", "ct2-nope", "--out", out], "unknown recipe"),
        (["export", str(results), "--recipe", "ct2-int8-fp32", "--out", out], "was not benchmarked"),
        (["export", str(_doctored(results, tmp_path, _failed)), "--recipe", "ct2-int8", "--out", out], "did not finish"),
        (["export", str(_doctored(results, tmp_path, _no_recommendation)), "--recommended", "--out", out],
         "no recommended recipe"),
        (["export", str(_doctored(results, tmp_path, _gone)), "--recipe", "ct2-int8", "--out", out],
         "no longer in the cache"),
        (["export", str(_doctored(results, tmp_path, _rebuilt)), "--recipe", "ct2-int8", "--out", out],
         "not the build benchmarked"),
        (["export", str(results), "--recipe", "ct2-int8", "--out", str(exports["ct2-int8"])], "not empty"),
        (["export", str(results), "--recipe", "ct2-int8", "--out", str(other), "--overwrite"],
         "not a whisperopt export"),
        (["export", str(results), "--recipe", "ct2-int8", "--out", out, "--push-to-hub", "not a repo"],
         "not a hub repository id"),
        (["transcribe", flac, "--model", str(exports["ct2-int8"]), "--recipe", "torch-fp32", "-o",
          str(tmp_path / "transcripts")],  # transcribe makes its -o first (as before exports); the export --out stays
         "is an export of recipe ct2-int8, not torch-fp32"),
        (["build", "--model", str(exports["ct2-int8"]), "--recipes", "ct2-int8"], "built already"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in _error(capsys), (argv, message)
    assert not Path(out).exists() and (other / "notes.txt").is_file()  # nothing half-written, nothing replaced
    # a damaged export is refused before it is loaded, saying what to do
    damaged = tmp_path / "damaged"
    shutil.copytree(exports["ct2-int8"], damaged)
    with open(damaged / "artifact" / "model.bin", "r+b") as f:
        f.truncate(1000)
    assert main(["transcribe", flac, "--model", str(damaged), "-o", out]) == 2
    assert "exported file artifact/model.bin has 1000 bytes" in _error(capsys)


def _any_flac() -> str:
    from whisperopt.data import load_dataset

    return str(load_dataset("librispeech:test-clean").utterances[0].audio)


@pytest.mark.slow
def test_push_to_hub_offline_keeps_the_export(real_bench, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    results, _, _ = real_bench
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "pushed"
    assert main(["export", str(results), "--recipe", "ct2-int8", "--out", str(out), "--push-to-hub",
                 "someone/whisper-tiny.en-ct2-int8"]) == 2
    err = _error(capsys)
    assert f"written to {out}" in err and "someone/whisper-tiny.en-ct2-int8" in err
    assert "hf download someone/whisper-tiny.en-ct2-int8" in (out / "README.md").read_text()
    # --overwrite replaces an earlier export
    assert main(["export", str(results), "--recipe", "ct2-int8", "--out", str(out), "--overwrite"]) == 0
    assert "hf download" not in (out / "README.md").read_text()
