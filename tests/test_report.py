"""Summary, recommendation, tables and plots, on summaries shaped like the runner's and on a hand-written results
directory (run.json, environment.json, status, rows and segments files, a JSONL manifest dataset)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from whisperopt.errors import WhisperoptError
from whisperopt.report import recommend, rich_table, select_columns, summarise, write_plots, write_reports
from whisperopt.report.columns import BY_KEY, DEFAULT_COLUMNS
from whisperopt.report.plots import pareto_front


def _row(name, eval_s, delta=None, ci=None, agree=None, status="ok", size=None, ram=None, **extra):
    """A summary row; WER in percent, delta and its CI in percentage points against a 5 % baseline."""
    return {"recipe": name, "status": status, "complete": True, "eval_s": eval_s, "speedup": 10.0 / eval_s,
            "wer": None if delta is None else 5.0 + delta, "wer_delta": delta, "wer_delta_ci": ci,
            "teacher_forced_agreement": agree, "size_mb": size if size is not None else 100.0 / (1 + eval_s),
            "peak_ram_mb": ram if ram is not None else 500.0, "latency_p50_s": 0.1, "latency_p90_s": 0.2, **extra}


def _real_summary():
    return {"synthetic": False, "recipes": [
        _row("torch-fp32", 10.0, 0.0, [0.0, 0.0], size=150.0, ram=900.0),
        _row("fast-but-bad", 2.0, 3.0, [2.5, 3.5]),
        _row("good", 4.0, 0.8, [0.3, 0.95], size=40.0, ram=700.0),
        _row("faster-good", 3.0, 0.9, [0.4, 0.99], size=75.0, ram=400.0),
        # the point estimate is within 1 point, but the test set cannot rule out +1.6: not recommended
        _row("lucky", 2.5, 0.5, [-0.2, 1.6]),
        {"recipe": "broken", "status": "failed", "reason": "x"},
    ]}


def test_recommend_uses_the_upper_bound_of_the_delta_ci():
    rec = recommend(_real_summary(), wer_budget=1.0)
    assert rec["recipe"] == "faster-good" and rec["basis"] == "wer" and rec["rank_by"] == "eval_s"
    assert rec["ranking"] == ["faster-good", "good", "torch-fp32"]
    assert set(rec["excluded"]) == {"fast-but-bad", "lucky", "broken"}
    assert "upper bound" in rec["excluded"]["lucky"] and "within" in rec["excluded"]["lucky"]
    assert rec["excluded"]["broken"] == "failed: x"
    assert (rec["eval_s"], rec["wer"], rec["wer_delta"], rec["wer_delta_ci"]) == (3.0, 5.9, 0.9, [0.4, 0.99])
    assert rec["speedup"] == pytest.approx(10 / 3) and rec["size_mb"] == 75.0 and rec["peak_ram_mb"] == 400.0
    assert recommend(_real_summary(), wer_budget=0.5)["recipe"] == "torch-fp32"  # the baseline itself qualifies
    assert recommend(_real_summary(), wer_budget=1.6)["recipe"] == "lucky"
    assert recommend(_real_summary(), wer_budget=5.0)["recipe"] == "fast-but-bad"
    json.dumps(rec)  # a plain dict: saved as it is in summary.json


def test_rank_by_size_and_peak_ram_pick_different_winners():
    by_size = recommend(_real_summary(), rank_by="size")
    by_ram = recommend(_real_summary(), rank_by="peak_ram")
    assert by_size["recipe"] == "good" and by_size["ranking"] == ["good", "faster-good", "torch-fp32"]
    assert by_ram["recipe"] == "faster-good" and by_ram["ranking"][-1] == "torch-fp32"
    summary = _real_summary()
    summary["recipes"][3]["peak_ram_mb"] = None  # a figure the engine did not report: not rankable by it
    rec = recommend(summary, rank_by="peak_ram")
    assert rec["recipe"] == "good" and "faster-good" in rec["excluded"]
    with pytest.raises(WhisperoptError) as exc:
        recommend(_real_summary(), rank_by="speed")
    assert "\n" not in str(exc.value) and "eval_s, peak_ram, size" in str(exc.value)


def test_incomplete_and_not_comparable_rows_are_never_recommended():
    summary = _real_summary()
    summary["recipes"] += [_row("partial", 1.0, 0.0, [0.0, 0.0], complete=False, utterances=3,
                                expected_utterances=5),
                           _row("other-loop", 1.0, 0.0, [0.0, 0.0], not_comparable="stops at end-of-text")]
    summary["recipes"].append(_row("users-defaults", 0.5, -1.0, [-2.0, 0.1], own_settings="beam 5, fallback"))
    rec = recommend(summary)
    assert rec["recipe"] == "faster-good"
    assert rec["excluded"]["partial"].startswith("incomplete: 3 of 5")
    assert rec["excluded"]["other-loop"] == "not comparable: stops at end-of-text"
    assert "its own settings" in rec["excluded"]["users-defaults"]  # shown, labelled, never the winner
    from whisperopt.report.columns import flags
    from whisperopt.report.tables import _caption, markdown

    assert flags(summary["recipes"][-1]) == ["own settings"]
    summary.update(config={"model": "m", "dataset": "d", "decode": {"beam_size": 1, "language": "en",
                                                                    "task": "transcribe", "batch_size": 1},
                           "device": "cpu", "threads": 2})
    assert "§ users-defaults: own settings: beam 5, fallback" in _caption(summary, select_columns(None))
    assert "| users-defaults (own settings) |" in markdown(summary)


def test_recommend_on_synthetic_weights_uses_fidelity_not_wer():
    summary = {"synthetic": True, "recipes": [
        _row("torch-fp32", 10.0, agree=1.0), _row("a", 2.0, agree=0.80), _row("b", 5.0, agree=0.97)]}
    rec = recommend(summary, min_agreement=0.95)
    assert rec["recipe"] == "b" and rec["basis"] == "teacher_forced_agreement"
    assert "n/a" in rec["criterion"] and rec["wer"] is None and "80.00 %" in rec["excluded"]["a"]
    assert recommend({"synthetic": True, "recipes": [{"recipe": "x", "status": "failed"}]})["recipe"] is None
    with pytest.raises(WhisperoptError, match="fraction"):
        recommend(summary, min_agreement=95)


def test_pareto_front_keeps_only_non_dominated_points():
    points = [(1.0, 5.0, "fp32"), (2.0, 5.2, "a"), (2.0, 6.0, "a-worse"), (1.5, 5.5, "dominated"),
              (4.0, 9.0, "fast"), (3.0, 9.5, "slow-and-bad")]
    assert [p[2] for p in pareto_front(points, lower_is_better=True)] == ["fp32", "a", "fast"]
    agreement = [(1.0, 100.0, "fp32"), (2.0, 99.0, "a"), (1.5, 98.0, "dominated"), (3.0, 99.0, "b")]
    assert [p[2] for p in pareto_front(agreement, lower_is_better=False)] == ["fp32", "b"]


# --- a hand-written results directory -------------------------------------------------------------------------

N = 40
WORDS = 20
BASE_ERRORS = [i % 2 for i in range(N)]  # torch-fp32: 20 errors in 800 words = 2.50 %
RECIPES = {
    # name: (latency per utterance s, extra errors per utterance, rows written, size MB, extra status fields)
    "torch-fp32": (0.5, [0] * N, N, 145, {}),
    "torch-int8-dynamic": (0.3, [1 if i in (3, 17) else 0 for i in range(N)], N, 40, {}),  # +0.25 points
    "openvino-int8-ptq-genai": (0.2, [1 if i in (5, 22) else 0 for i in range(N)], N, 75, {}),  # +0.25, faster
    # +0.75 points, all on one utterance: within 1 point, but its CI upper bound is not
    "openvino-int8-weights": (0.15, [6 if i == 9 else 0 for i in range(N)], N, 70,
                              {"isa_path": {"precision": "bf16", "isa": "amx_bf16", "engine": "brgemm_avx512_amx ×9"}}),
    "onnx-int4": (0.1, [2] * N, N, 25, {}),  # +10 points
    "ct2-int8": (0.05, [0] * N, 30, 38, {}),  # incomplete
    "sherpa-int8": (0.05, [0] * N, N, 36, {"not_comparable": "greedy until end-of-text"}),
}


def _counts(errors: int, scale: int = 1) -> dict:
    return {"substitutions": errors * scale, "deletions": 0, "insertions": 0, "hits": (WORDS - errors) * scale}


def _write_results(out, synthetic=False):
    import soundfile as sf

    from whisperopt.bench.config import BenchConfig, save_run

    out.mkdir(parents=True, exist_ok=True)
    sf.write(out / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    manifest = out / "set.jsonl"
    manifest.write_text("".join(json.dumps({"audio": "a.wav", "text": "some words", "id": f"u{i:02d}"}) + "\n"
                                for i in range(N)))
    save_run(BenchConfig(model="openai/whisper-tiny", recipes=[*RECIPES, "torch-fp16"], dataset=str(manifest),
                         out_dir=out))
    (out / "environment.json").write_text(json.dumps({
        "os": "Linux", "cpu": {"model": "test cpu", "isa": ["avx2"]}, "versions": {"torch": "2"},
        "dataset": {"name": "set", "utterances": N, "total_s": N * 0.1},
        "model": {"spec": "openai/whisper-tiny", "path": None, "synthetic": synthetic}}))
    (out / "torch-fp16.status.json").write_text(json.dumps({"recipe": "torch-fp16", "status": "skipped",
                                                             "reason": "needs CUDA"}))
    for k, (name, (latency, extra, n_rows, size_mb, fields)) in enumerate(RECIPES.items()):
        status = {"recipe": name, "status": "ok", "engine": "test", "size_bytes": size_mb * 2**20,
                  "teacher_forced_agreement": 1.0 - 0.01 * k, "encoder_rel_error": 1e-3 * k, **fields}
        (out / f"{name}.status.json").write_text(json.dumps(status))
        rows = []
        for i in range(n_rows):
            errors = BASE_ERRORS[i] + extra[i]
            rows.append({"id": f"u{i:02d}", "duration_s": 4.0, "latency_s": latency, "batch": 1, "tokens": 12,
                         "words": None if synthetic else _counts(errors),
                         "chars": None if synthetic else _counts(errors, 5)})
        (out / f"{name}.rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (out / f"{name}.segments.jsonl").write_text(json.dumps({
            "load_s": 0.5, "peak_ram_mb": 1500.0 - 100 * k, "run_ram_mb": 1400.0, "peak_vram_mb": None,
            "cpu_s": 2.0, "wall_s": 1.0}) + "\n")
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = _write_results(tmp_path_factory.mktemp("results"))
    return out, summarise(out)


def test_summary_has_cis_and_paired_deltas_in_percent(results):
    _, summary = results
    rows = {r["recipe"]: r for r in summary["recipes"]}
    base = rows["torch-fp32"]
    assert base["wer"] == pytest.approx(2.5) and base["cer"] == pytest.approx(2.5)  # percent, not 0.025
    assert base["wer_ci"][0] < 2.5 < base["wer_ci"][1]
    assert (base["wer_delta"], base["wer_delta_ci"], base["wer_delta_significant"]) == (0.0, [0.0, 0.0], False)
    assert base["paired_utterances"] == N
    int8 = rows["torch-int8-dynamic"]
    assert int8["wer_delta"] == pytest.approx(0.25) and int8["wer_delta_ci"][0] <= 0.25 <= int8["wer_delta_ci"][1]
    assert int8["wer_delta_ci"][1] < 1.0 and not int8["wer_delta_significant"]
    assert rows["onnx-int4"]["wer_delta"] == pytest.approx(10.0) and rows["onnx-int4"]["wer_delta_significant"]
    assert rows["onnx-int4"]["cer_delta_significant"] and rows["onnx-int4"]["cer_delta_ci"][0] > 5
    lucky = rows["openvino-int8-weights"]
    assert lucky["wer_delta"] == pytest.approx(0.75) and lucky["wer_delta_ci"][1] > 1.0
    partial = rows["ct2-int8"]
    assert partial["complete"] is False and partial["utterances"] == 30 and partial["paired_utterances"] == 30
    assert rows["torch-fp16"]["status"] == "skipped"
    assert summary["bootstrap"]["resamples"] == 2000 and summary["bootstrap"]["level"] == 0.95


def test_recommendation_is_saved_in_json_and_markdown(results, tmp_path):
    out, summary = results
    rec = summary["recommendation"]
    assert rec["recipe"] == "openvino-int8-ptq-genai"
    assert rec["ranking"] == ["openvino-int8-ptq-genai", "torch-int8-dynamic", "torch-fp32"]
    assert set(rec["excluded"]) == {"openvino-int8-weights", "onnx-int4", "ct2-int8", "sherpa-int8", "torch-fp16"}
    assert "upper bound" in rec["excluded"]["openvino-int8-weights"]
    paths = write_reports(summary, tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["recommendation"] == json.loads(json.dumps(rec))
    md = paths["md"].read_text()
    section = md.split("## Recommendation", 1)[1]
    assert "**openvino-int8-ptq-genai**" in section and "runner-ups, in order: torch-int8-dynamic, torch-fp32" in section
    assert "ct2-int8: incomplete: 30 of 40" in section and "sherpa-int8: not comparable" in section
    assert "| ct2-int8 (incomplete 30/40) |" in md and "| sherpa-int8 (not comparable) |" in md
    # every column, CI bounds and deltas included, in percent / points
    int4 = next(line for line in md.splitlines() if line.startswith("| onnx-int4 |"))
    assert "| ΔWER 95% CI |" in md and "| 12.50 | [11.75, 13.25] | +10.00* | [+10.00, +10.00] |" in int4


def test_csv_has_every_column_rounded(results, tmp_path):
    _, summary = results
    paths = write_reports(summary, tmp_path)
    rows = {r["recipe"]: r for r in csv.DictReader(io.StringIO(paths["csv"].read_text()))}
    base, int4 = rows["torch-fp32"], rows["onnx-int4"]
    assert base["wer"] == "2.5" and base["wer_delta"] == "0.0" and base["wer_delta_significant"] == "False"
    assert int4["wer_delta"] == "10.0" and float(int4["wer_delta_ci_lo"]) > 5 and int4["cer_ci_hi"]
    assert rows["torch-int8-dynamic"]["encoder_rel_error"] == "1.00e-03"
    # the ISA path: the engine's report where it made one, else the recipe's precision on the recorded CPU flags
    assert rows["openvino-int8-weights"]["isa"] == "bf16 amx_bf16" and rows["torch-int8-dynamic"]["isa"] == "int8 avx2"
    assert base["isa"] == "fp32 avx2" and rows["torch-fp16"]["isa"] == ""
    md = paths["md"].read_text()
    assert "| ISA path |" in md and "- torch-int8-dynamic: ISA path: int8 avx2 (not reported by the engine" in md
    for row in rows.values():
        for key, value in row.items():
            if value and value[0].isdigit() and "e" not in value:
                assert len(value.split(".")[-1]) <= 4, (key, value)  # no 17-digit floats


def test_default_terminal_table_fits_100_columns(results):
    from rich.console import Console

    _, summary = results
    console = Console(width=100, record=True)
    console.print(rich_table(summary))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 100
    for row in summary["recipes"]:
        line = next(line for line in text.splitlines() if line.startswith(row["recipe"]))
        if row["status"] != "ok":
            assert row["status"] in line
            continue
        for key in DEFAULT_COLUMNS:
            value = BY_KEY[key].text(row)
            if key == "speedup" and row.get("complete") is False:
                assert value is None  # eval times over different utterance sets do not compare
                continue
            assert value is not None and value in line, (row["recipe"], key, value, line)
    assert "† ct2-int8: incomplete 30/40" in text and "‡ sherpa-int8: not comparable" in text
    assert "torch-fp16: skipped: needs CUDA" in text


def test_default_terminal_table_fits_100_columns_with_wide_figures():
    """Two-digit WERs and deltas, multi-second latencies and GB-sized models on the longest recipe name, flagged
    twice, next to a skipped row: still nothing cut at 100 columns."""
    from rich.console import Console

    wide = _row("openvino-int8-ptq-genai", 0.8, delta=12.34, ci=[10.12, 15.67], size=1234.5, ram=23456.0,
                wer_delta_significant=True, latency_p50_s=12.345, rtfx=123.4, complete=False, utterances=9,
                expected_utterances=10, not_comparable="x")
    summary = {"config": {"model": "openai/whisper-large-v3-turbo", "dataset": "librispeech:test-other"},
               "synthetic": False, "recipes": [wide, {"recipe": "torch-fp16", "status": "not run"}]}
    console = Console(width=100, record=True)
    console.print(rich_table(summary))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 100
    assert "openvino-int8-ptq-genai†‡ " in text
    for value in ("17.34", "+12.34*", "[+10.12, +15.67]", "12.50", "12345", "123.4", "23456", "1234.5"):
        assert value in text, value


def test_columns_option(results):
    from rich.console import Console

    _, summary = results
    console = Console(width=200, record=True)
    console.print(rich_table(summary, "cer,cer_ci,encoder_rel_error"))
    text = console.export_text()
    line = next(line for line in text.splitlines() if line.startswith("torch-int8-dynamic"))
    assert line.split() == ["torch-int8-dynamic", "2.75", "[1.88,", "3.75]", "1.00e-03"]
    assert "CER" in text and "WER" not in text
    assert [c.key for c in select_columns("all")] == list(BY_KEY)
    with pytest.raises(WhisperoptError) as exc:
        select_columns("wer,bogus")
    assert "bogus" in str(exc.value) and "wer_delta_ci" in str(exc.value) and "\n" not in str(exc.value)


def test_cli_report_saves_the_chosen_ranking_and_rejects_bad_columns(results, capsys):
    from whisperopt.cli import main

    out, _ = results
    assert main(["report", str(out), "--rank-by", "size", "--wer-budget", "0.8", "--columns", "wer,size_mb"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "summary.json").read_text())["recommendation"]
    assert saved["rank_by"] == "size" and saved["wer_budget"] == 0.8
    assert saved["recipe"] == "torch-int8-dynamic"  # 40 MB: the smallest whose ΔWER CI stays within 0.8 points
    assert "recommendation: torch-int8-dynamic" in printed and "smallest weights on disk" in printed
    assert "## Recommendation" in (out / "summary.md").read_text()
    assert main(["report", str(out), "--columns", "wer,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("whisperopt: error: unknown column(s) nope") and "\n" not in err


def test_synthetic_results_keep_wer_na(tmp_path):
    summary = summarise(_write_results(tmp_path / "synthetic", synthetic=True))
    for r in summary["recipes"]:
        if r["status"] == "ok":
            assert all(r[k] is None for k in ("wer", "cer", "wer_ci", "wer_delta", "wer_delta_ci",
                                               "wer_delta_significant", "paired_utterances")), r["recipe"]
    rec = summary["recommendation"]
    assert rec["basis"] == "teacher_forced_agreement" and "WER is n/a" in rec["criterion"]
    # agreement 1.00 down to 0.94 in steps of 0.01: onnx-int4 (0.96) is the fastest at >= 0.95 that is not flagged
    assert rec["recipe"] == "onnx-int4" and set(rec["excluded"]) == {"ct2-int8", "sherpa-int8", "torch-fp16"}


def test_plots_are_written(results, tmp_path):
    _, summary = results
    paths = write_plots(summary, tmp_path)
    assert [p.name for p in paths] == ["speedup_vs_size.png", "latency.png", "pareto.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


def test_pareto_plot_of_synthetic_weights(tmp_path):
    summary = {"config": {"model": "m", "dataset": "d"}, "synthetic": True,
               "recipes": [_row("torch-fp32", 10.0, agree=1.0), _row("x", 5.0, agree=0.9)]}
    paths = write_plots(summary, tmp_path)
    assert (tmp_path / "pareto.png") in paths and (tmp_path / "pareto.png").stat().st_size > 5000
