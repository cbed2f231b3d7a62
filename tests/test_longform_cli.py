"""`whisperopt bench` on long-form data (bench/longform_runner.py): every (recipe, mode) in its own process, scored,
paired with torch-fp32 sequential, and the fastest recipe within the budget recommended."""

from __future__ import annotations

import json

import pytest

from whisperopt.bench.longform_runner import is_longform, recommend
from whisperopt.cli import main


def _row(recipe, mode, rtfx, delta, ci):
    return {"recipe": recipe, "mode": mode, "status": "ok", "rtfx": rtfx, "wer": 5.0 + (delta or 0),
            "wer_delta": delta, "wer_delta_ci": ci}


def test_recommend_takes_the_fastest_row_within_the_budget():
    rows = [_row("torch-fp32", "sequential", 8.0, None, None),  # the reference: no pairing with itself
            _row("ct2-int8", "batched", 30.0, 1.2, [0.4, 2.0]),  # fastest, outside the budget
            _row("ct2-int8", "vad", 25.0, 0.1, [-0.3, 0.45]),
            {"recipe": "x", "mode": "vad", "status": "skipped", "reason": "engine missing"}]
    rec = recommend({"datasets": {"d": {"rows": rows}}}, 0.5, "torch-fp32")["d"]
    assert (rec["recipe"], rec["mode"]) == ("ct2-int8", "vad")
    assert recommend({"datasets": {"d": {"rows": rows}}}, 3.0, "torch-fp32")["d"]["mode"] == "batched"
    assert recommend({"datasets": {"d": {"rows": rows[1:]}}}, 0.5, "torch-fp32")["d"] is None  # no reference run
    slow = [_row("torch-fp32", "sequential", 8.0, None, None), _row("ct2-int8", "batched", 30.0, 1.2, [0.4, 2.0])]
    assert recommend({"datasets": {"d": {"rows": slow}}}, 0.5, "torch-fp32")["d"]["recipe"] == "torch-fp32"


def test_long_form_names_route_to_the_long_form_bench():
    assert is_longform("librispeech-long:test-clean") and is_longform("librispeech:test-clean,librispeech-long:x")
    assert not is_longform("librispeech:test-clean")


@pytest.mark.parametrize("args, words", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--dataset", "librispeech-long:test-clean,librispeech:test-clean"], "only long-form datasets"),
    (["--dataset", "librispeech-long:nowhere"], "nowhere"),
    (["--recipes", "ct2-int8:warp"], "unknown long-form mode"),
])
def test_bad_long_form_arguments_are_one_line(args, words, tmp_path, capsys):
    base = ["bench", "--model", "synthetic:tiny", "--dataset", "librispeech-long:test-clean", "--out",
            str(tmp_path / "out")]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


@pytest.mark.slow
def test_bench_runs_the_hard_long_form_file_and_recommends(tiny_en, librispeech, tmp_path):
    out = tmp_path / "long"
    code = main(["bench", "--model", "tiny.en", "--dataset", "librispeech-long:test-clean:hard", "--recipes",
                 "ct2-int8:batched+vad", "--limit", "1", "--threads", "2", "--out", str(out), "--wer-budget", "50"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    (block,) = summary["datasets"].values()
    rows = {r["mode"]: r for r in block["rows"]}
    assert set(rows) == {"batched", "vad"} and all(r["status"] == "ok" for r in rows.values()), rows
    for r in rows.values():
        assert 0 <= r["wer"] < 40 and r["rtfx"] > 1, r
    # Silero VAD never decodes the inserted silence, noise and music: no more words land there than without it
    assert rows["vad"]["stretch_words"] <= rows["batched"]["stretch_words"], rows
    assert block["reference"] is None  # torch-fp32 sequential was not run: no paired deltas, said so
    assert list(summary["recommendation"].values()) == [None]  # nothing to judge accuracy by
    assert "recommended (fastest within +50 points" in (out / "summary.md").read_text()
