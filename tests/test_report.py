"""Recommendation logic and plots, on summaries shaped like the runner's."""

from __future__ import annotations

from whisperopt.report import recommend, write_plots


def _row(name, eval_s, wer=None, agree=None, status="ok"):
    return {"recipe": name, "status": status, "eval_s": eval_s, "wer": wer, "teacher_forced_agreement": agree,
            "speedup": 10.0 / eval_s, "size_mb": 100.0 / (1 + eval_s), "latency_p50_s": 0.1, "latency_p90_s": 0.2}


def test_recommend_within_wer_budget():
    summary = {"synthetic": False, "recipes": [
        _row("torch-fp32", 10.0, wer=0.050),
        _row("fast-but-bad", 2.0, wer=0.080),
        _row("good", 4.0, wer=0.058),
        _row("faster-good", 3.0, wer=0.059),
        {"recipe": "broken", "status": "failed", "reason": "x"},
    ]}
    assert recommend(summary, wer_budget=1.0)["recipe"] == "faster-good"
    assert recommend(summary, wer_budget=0.5)["recipe"] == "torch-fp32"
    assert recommend(summary, wer_budget=5.0)["recipe"] == "fast-but-bad"


def test_recommend_on_synthetic_weights_uses_fidelity_not_wer():
    summary = {"synthetic": True, "recipes": [
        _row("torch-fp32", 10.0, agree=1.0), _row("a", 2.0, agree=0.80), _row("b", 5.0, agree=0.97)]}
    rec = recommend(summary, min_agreement=0.95)
    assert rec["recipe"] == "b" and "n/a" in rec["criterion"]


def test_plots_are_written(tmp_path):
    summary = {"config": {"model": "m", "dataset": "d"}, "recipes": [_row("torch-fp32", 10.0), _row("x", 5.0)]}
    paths = write_plots(summary, tmp_path)
    assert [p.name for p in paths] == ["speedup_vs_size.png", "latency.png"]
    assert all(p.stat().st_size > 5000 for p in paths)
