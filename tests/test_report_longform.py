"""The long-form workload in the report (report/longform.py, report/workloads.py, recommend.recommend_long): a
results folder's longform.json rendered as Markdown, CSV, JSON, the terminal table and summary.html, its
recommendation (fastest recipe and mode within the paired ΔWER budget; a peer row with its own settings never;
synthetic weights none), and both workloads side by side with ``--workload`` choosing the headline.

No engine runs: the rows are the bench's own (``bench.longform.LongformRun.to_row``, paired with the reference as
``bench/longform_runner.py`` pairs them) over made-up hypotheses of made-up long-form files, so the schema is the one
the bench writes and the bootstrap intervals are real."""

from __future__ import annotations

import csv
import io
import json

import pytest

from whisperopt.bench.longform import FileResult, LongformRun
from whisperopt.cli import main
from whisperopt.errors import WhisperoptError
from whisperopt.metrics.longform import LongformReference, SpokenSpan, Stretch
from whisperopt.report import recommend_long, summarise_results
from whisperopt.report.longform import read_longform, summarise_long

from .test_report import _write_results

FILES = 8
SENTENCES = ["the quick brown fox jumps over the lazy dog near the river bank",
             "she sells sea shells by the sea shore every single summer morning",
             "a stitch in time saves nine and a penny saved is a penny earned"]
HOSTILE = "<script>document.title='pwned'</script>"


def _reference(i: int) -> LongformReference:
    """Three utterances of 12-13 words, 10 s each, with 10 s of inserted silence after the first."""
    spans = (SpokenSpan(f"f{i}-0", 0.0, 10.0, 0.2, 9.8, SENTENCES[0]),
             SpokenSpan(f"f{i}-1", 20.0, 30.0, 20.2, 29.8, SENTENCES[1]),
             SpokenSpan(f"f{i}-2", 30.0, 40.0, 30.2, 39.8, SENTENCES[2]))
    return LongformReference(f"file{i}", 40.0, spans, (Stretch("silence", 10.0, 20.0),), "hard")


def _segments(i: int, errors: int = 0, stretch_text: str | None = None) -> list[dict]:
    """The reference's utterances as segments, ``errors`` words of the first one replaced; ``stretch_text``: a
    made-up segment inside the silence."""
    words = SENTENCES[0].split()
    words[:errors] = ["wrong"] * errors
    segs = [{"start": 0.2, "end": 9.8, "text": " ".join(words)}]
    if stretch_text:
        segs.append({"start": 12.0, "end": 18.0, "text": stretch_text})
    return segs + [{"start": 20.2, "end": 29.8, "text": SENTENCES[1]}, {"start": 30.2, "end": 39.8, "text": SENTENCES[2]}]


def _run(recipe: str, mode: str, wall_s: float, errors=lambda i: 0, stretch_text=None, own=None, ram=900.0):
    files = [FileResult(f"file{i}", _reference(i), _segments(i, errors(i), stretch_text), 40.0, wall_s, wall_s,
                        ram - 100) for i in range(FILES)]
    return LongformRun(recipe, mode, "mini-long", files, {"mode": mode}, 2, "cpu", 0.5, ram, 0, own)


def long_record(synthetic: bool = False, reference: bool = True) -> dict:
    """A long-form results record as ``run_longform_bench`` writes it (rows from ``LongformRun.to_row``)."""
    ref = _run("torch-fp32", "sequential", 8.0, errors=lambda i: i % 2, ram=1400.0)
    runs = ([ref] if reference else []) + [
        _run("ct2-int8", "batched", 1.0, errors=lambda i: 3, stretch_text="thank you thank you"),  # fastest, worse
        _run("ct2-int8", "vad", 1.6, errors=lambda i: i % 2, ram=700.0),  # as accurate as the reference
        _run("ct2-int8-fw-batched", "native", 0.5, own="faster-whisper's own defaults"),  # fastest, best, a peer
    ]
    rows = [r.to_row(ref if reference else None) for r in runs]
    rows.append({"recipe": "onnx-int8", "mode": "sequential", "status": "skipped", "reason": f"engine {HOSTILE}"})
    if synthetic:
        for row in rows:
            row.update({k: None for k in row if k.startswith(("wer", "cer"))})
    block = {"spec": "librispeech-long:test", "files": FILES, "reference": "torch-fp32 sequential" if reference
             else None, "audio_min": FILES * 40 / 60, "stretch_min": FILES * 10 / 60, "rows": rows}
    return {"workload": "long", "model": "tiny.en", "threads": 2, "device": "cpu", "cpu": "test cpu",
            "batch_size": 8, "synthetic": synthetic, "baseline": "torch-fp32",
            "bootstrap": {"resamples": 1000, "level": 0.95, "seed": 0, "unit": "file", "interval": "percentile"},
            "datasets": {"mini-long": block}}


def _write_long(out, **kwargs):
    out.mkdir(parents=True, exist_ok=True)
    (out / "longform.json").write_text(json.dumps(long_record(**kwargs)))
    return out


def test_recommend_long_takes_the_fastest_within_the_budget_never_a_peer():
    record = long_record()
    rows = {(r["recipe"], r["mode"]): r for r in record["datasets"]["mini-long"]["rows"]}
    # the made-up figures are what the test means: batched is 3 words per file worse, vad as good as the reference
    assert rows[("ct2-int8", "batched")]["wer_delta_ci"][0] > 5 and rows[("ct2-int8", "vad")]["wer_delta"] == 0
    rec = recommend_long(record, 1.0)["mini-long"]
    assert (rec["recipe"], rec["mode"]) == ("ct2-int8", "vad") and rec["rtfx"] == pytest.approx(25.0)
    assert rec["ranking"] == ["ct2-int8 vad", "torch-fp32 sequential"]  # fastest first, the reference qualifies
    assert "exceeds the 1-point budget" in rec["excluded"]["ct2-int8 batched"]
    assert "own settings" in rec["excluded"]["ct2-int8-fw-batched native"]  # faster and more accurate: a peer
    assert rec["excluded"]["onnx-int8 sequential"].startswith("skipped")
    wide = recommend_long(record, 50.0)["mini-long"]
    assert (wide["recipe"], wide["mode"]) == ("ct2-int8", "batched")  # a wide budget lets the fastest in
    by_ram = recommend_long(record, 1.0, "peak_ram")["mini-long"]
    assert (by_ram["recipe"], by_ram["mode"]) == ("ct2-int8", "vad") and "lowest peak RAM" in by_ram["criterion"]
    assert by_ram["ranking"][-1] == "torch-fp32 sequential"  # 1400 MiB


def test_recommend_long_gives_none_without_accuracy():
    synthetic = recommend_long(long_record(synthetic=True), 50.0)["mini-long"]
    assert synthetic["recipe"] is None and "synthetic weights" in synthetic["reason"]
    alone = recommend_long(long_record(reference=False), 50.0)["mini-long"]
    assert alone["recipe"] is None and "no reference run" in alone["reason"]
    with pytest.raises(WhisperoptError, match="--wer-budget"):
        recommend_long(long_record(), -1.0)


def test_report_renders_a_long_form_folder_in_every_format(tmp_path, capsys):
    out = _write_long(tmp_path / "long")
    assert main(["report", str(out), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Long-form benchmark: tiny.en, 2 threads") and "| ct2-int8 | vad | 25.0 |" in md
    assert "| ct2-int8-fw-batched | native (own settings) |" in md
    assert "- recommended on mini-long: **ct2-int8 vad**: RTFx 25.0" in md
    assert md == (out / "summary.md").read_text()
    assert main(["report", str(out), "--format", "csv", "--wer-budget", "50"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["recommended"] for r in rows if r["recipe"] == "ct2-int8"] == ["True", "False"]  # batched, vad
    assert {r["mode"] for r in rows} == {"sequential", "batched", "vad", "native"}
    assert float(next(r for r in rows if r["mode"] == "batched")["stretch_words_silence"]) > 0
    assert main(["report", str(out), "--format", "json", "--wer-budget", "50"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert saved["workload"] == "long" and saved["headline"] == "long" and saved["budget"] == 50
    assert saved["recommendation"]["mini-long"]["mode"] == "batched"
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    assert "long-form recommendation on mini-long: ct2-int8 vad" in table and "ct2-int8★" in table
    page = (out / "summary.html").read_text()
    assert 'id="long-0"' in page and "ct2-int8 vad" in page and HOSTILE not in page
    assert main(["report", str(out), "--workload", "short"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no short-form results" in err and "\n" not in err


@pytest.mark.slow
def test_both_workloads_side_by_side_the_headline_chosen(tmp_path, capsys):
    out = _write_results(tmp_path / "both")
    (out / "longform.json").write_text(json.dumps(long_record()))
    summary = summarise_results(out)
    assert summary["headline"] == "short" and summary["longform"]["recommendation"]["mini-long"]["mode"] == "vad"
    assert main(["report", str(out), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    short_at, long_at = md.index("## Short-form workload"), md.index("## Long-form workload")
    assert short_at < long_at and "### Recommendation" in md and "- recommended on mini-long: **ct2-int8 vad**" in md
    assert (out / "summary.csv").is_file() and (out / "summary-long.csv").is_file()
    assert main(["report", str(out), "--workload", "long", "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.index("## Long-form workload") < md.index("## Short-form workload")
    assert md.split("## ")[0].count("recommended on mini-long: **ct2-int8 vad**") == 1  # the headline, on top
    saved = json.loads((out / "summary.json").read_text())
    assert saved["headline"] == "long" and saved["recipes"] and saved["longform"]["workload"] == "long"
    page = (out / "summary.html").read_text()
    top = page[page.index('id="recommendation"'):page.index("</section>", page.index('id="recommendation"'))]
    assert "long-form, mini-long" in top and 'id="recommendation-short"' in page and 'id="results"' in page
    assert page.index('id="workload-long"') < page.index('id="workload-short"')
    assert main(["report", str(out), "--workload", "long", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("dataset,recipe,mode")  # the headline's CSV
    assert main(["report", str(out)]) == 0  # the terminal: both tables, each recommendation
    text = capsys.readouterr().out
    assert "recommendation: " in text and "long-form recommendation on mini-long" in text


def test_a_damaged_long_form_file_is_one_line_naming_it(tmp_path, capsys):
    out = _write_long(tmp_path / "bad")
    (out / "longform.json").write_text("{not json")
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "longform.json is damaged" in err and "\n" not in err
    record = long_record()
    record["datasets"]["mini-long"]["rows"][0]["rtfx"] = "fast"
    (out / "longform.json").write_text(json.dumps(record))
    with pytest.raises(WhisperoptError, match=r"longform.json are damaged \(dataset mini-long: rtfx of torch-fp32"):
        read_longform(out)
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no benchmark results" in capsys.readouterr().err


def test_a_folder_from_before_longform_json_is_read_from_its_summary(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    old = long_record()
    old.pop("synthetic")
    old.update(wer_note="synthetic weights: WER/CER n/a (speed and memory only)", recommendation={"mini-long": None})
    (out / "summary.json").write_text(json.dumps(old))
    summary = summarise_long(read_longform(out))
    assert summary["synthetic"] and summary["recommendation"]["mini-long"]["recipe"] is None
