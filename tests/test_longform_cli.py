"""`whisperopt bench` on long-form data (bench/longform_runner.py): every (recipe, mode) in its own process, scored,
paired with torch-fp32 sequential, saved to longform.json; the report (report/longform.py) recommends the fastest
recipe and mode within the budget and renders the folder."""

from __future__ import annotations

import json

import pytest

from whisperopt.bench.longform_runner import is_longform
from whisperopt.cli import main
from whisperopt.report import recommend_long


def _row(recipe, mode, rtfx, delta, ci):
    return {"recipe": recipe, "mode": mode, "status": "ok", "rtfx": rtfx, "wer": 5.0 + (delta or 0),
            "wer_delta": delta, "wer_delta_ci": ci}


def test_recommend_takes_the_fastest_row_within_the_budget():
    rows = [_row("torch-fp32", "sequential", 8.0, None, None),  # the reference: no pairing with itself
            _row("ct2-int8", "batched", 30.0, 1.2, [0.4, 2.0]),  # fastest, outside the budget
            _row("ct2-int8", "vad", 25.0, 0.1, [-0.3, 0.45]),
            {"recipe": "x", "mode": "vad", "status": "skipped", "reason": "engine missing"}]

    def rec(rows, budget, reference="torch-fp32 sequential"):
        return recommend_long({"datasets": {"d": {"rows": rows, "reference": reference}}}, budget)["d"]

    assert (rec(rows, 0.5)["recipe"], rec(rows, 0.5)["mode"]) == ("ct2-int8", "vad")
    assert rec(rows, 3.0)["mode"] == "batched"
    assert rec(rows[1:], 0.5, None)["recipe"] is None  # no reference run
    slow = [_row("torch-fp32", "sequential", 8.0, None, None), _row("ct2-int8", "batched", 30.0, 1.2, [0.4, 2.0])]
    assert rec(slow, 0.5)["recipe"] == "torch-fp32"


def test_long_form_names_route_to_the_long_form_bench():
    assert is_longform("librispeech-long:test-clean") and is_longform("librispeech:test-clean,librispeech-long:x")
    assert not is_longform("librispeech:test-clean")


@pytest.mark.parametrize("args, words", [
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--dataset", "librispeech-long:test-clean,librispeech:test-clean,librispeech:dev-clean"],
     "one short-form dataset beside the long-form ones"),
    (["--dataset", "librispeech:test-clean", "--workload", "long"], "this bench runs no long-form dataset"),
    (["--dataset", "librispeech:test-clean,librispeech-long:nowhere"], "nowhere"),  # before the short-form bench
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
def test_bench_runs_the_hard_long_form_file_beside_the_short_form_set(tiny_en, librispeech, tmp_path, capsys):
    """One short-form and one long-form dataset: both benches into one --out, both workloads in the report, the
    long-form one the headline (--workload long)."""
    out = tmp_path / "both"
    code = main(["bench", "--model", "tiny.en", "--dataset", "librispeech:test-clean,librispeech-long:test-clean:hard",
                 "--recipes", "ct2-int8:batched+vad", "--limit", "1", "--threads", "2", "--out", str(out),
                 "--wer-budget", "50", "--fidelity-utterances", "0", "--warmup", "0", "--workload", "long"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"] == "long" and summary["config"]["dataset"] == "librispeech:test-clean"
    assert [(r["recipe"], r["status"], r["utterances"]) for r in summary["recipes"]] == [("ct2-int8", "ok", 1)]
    (block,) = summary["longform"]["datasets"].values()
    rows = {r["mode"]: r for r in block["rows"]}
    assert set(rows) == {"batched", "vad"} and all(r["status"] == "ok" for r in rows.values()), rows
    for r in rows.values():
        assert 0 <= r["wer"] < 40 and r["rtfx"] > 1, r
    # Silero VAD never decodes the inserted silence, noise and music: no more words land there than without it
    assert rows["vad"]["stretch_words"] <= rows["batched"]["stretch_words"], rows
    assert block["reference"] is None  # torch-fp32 sequential was not run: no paired deltas, said so
    (rec,) = summary["longform"]["recommendation"].values()  # nothing to judge accuracy by
    assert rec["recipe"] is None and "no reference run" in rec["reason"], rec
    md = (out / "summary.md").read_text()
    assert "<= 50 percentage points (paired over files)" in md
    assert md.index("## Long-form workload") < md.index("## Short-form workload")
    # the report renders the folder the bench wrote (run.json and its rows, longform.json), in each format
    assert main(["report", str(out), "--format", "markdown", "--wer-budget", "1"]) == 0
    md = capsys.readouterr().out
    assert md.index("## Short-form workload") < md.index("## Long-form workload")  # the default headline
    assert "| ct2-int8 | batched |" in md and "| ct2-int8 | vad |" in md and "<= 1 percentage point" in md
    assert main(["report", str(out), "--workload", "long", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("dataset,recipe,mode") and len(lines) == 3
    assert 'id="long-form"' in (out / "summary.html").read_text()
