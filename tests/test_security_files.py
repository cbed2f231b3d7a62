"""Files from data, tried as an attacker would (issue 24): transcribe never loses a transcript nor overwrites an
input and reads --files-from bounded; a results folder whose names, records or numbers are crafted cannot make the
report read outside it, crash, or write invalid JSON; every such file is a one-line error, exit 2, naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_report import _write_results
from whisperopt.cli import main
from whisperopt.errors import WhisperoptError
from whisperopt.files import atomic_dir, atomic_write_json, confined, json_text
from whisperopt.transcribe import inputs
from whisperopt.transcribe.inputs import output_names, plan, read_file_list

FLACS = "LibriSpeech/test-clean/1089/134686/1089-134686-000{}.flac"
TR = ["--model", "synthetic:tiny", "--max-new-tokens", "8", "--beam-size", "1", "--best-of", "1",
      "--temperature-increment-on-fallback", "0", "--language", "en", "--threads", "1"]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("whisperopt: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- transcribe: output names, inputs, --files-from

def test_output_names_are_unique_per_input():
    assert output_names(["d/a.wav", "d/b.wav"]) == ["a", "b"]  # openai-whisper's names while stems differ
    assert output_names(["a.mp3", "a.opus"]) == ["a.mp3", "a.opus"]
    assert output_names(["/c/a/x.wav", "/c/b/x.wav"]) == ["a/x", "b/x"]  # the same file name: its path mirrored
    assert output_names(["/c/x.wav", "/c/sub/x.wav"]) == ["x", "sub/x"]
    assert output_names(["/c/a/x.flac", "/c/a/x.mp3", "/c/b/x.flac"]) == ["a/x.flac", "a/x.mp3", "b/x.flac"]
    assert output_names(["-", "/c/stdin.wav"]) == ["stdin", "stdin.wav"]


def test_plan_refuses_an_output_over_an_input_and_two_inputs_on_one_name(tmp_path, capsys):
    (tmp_path / "clip.txt").write_bytes(b"audio bytes")
    with pytest.raises(WhisperoptError, match="clip.txt would overwrite that input itself"):
        plan([str(tmp_path / "clip.txt")], tmp_path, ["txt"], overwrite=True)
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "song.mp3").symlink_to(tmp_path / "a.txt")  # another input, under another name: a's transcript
    (tmp_path / "a.txt").write_bytes(b"audio bytes")
    with pytest.raises(WhisperoptError, match="a.txt would overwrite the input .*song.mp3"):
        plan([str(tmp_path / "a.wav"), str(tmp_path / "song.mp3")], tmp_path, ["txt"], overwrite=True)
    with pytest.raises(WhisperoptError, match="would both be written to"):  # x.flac / x.flac.mp3: one x.flac.*
        plan(["d/x.flac", "d/x.ogg", "d/x.flac.mp3"], tmp_path / "out", ["txt"], overwrite=True)
    (tmp_path / "b.wav").write_bytes(b"x")
    todo, done, failed = plan([str(tmp_path / "b.wav"), f"{tmp_path}/./b.wav"], tmp_path / "out", ["txt"], False)
    assert [n for n, _ in todo] == [str(tmp_path / "b.wav")] and not done and not failed  # listed twice: once
    assert "listed twice" in capsys.readouterr().out


def test_files_from_is_bounded(tmp_path, monkeypatch):
    with pytest.raises(WhisperoptError, match="larger than 16 MiB"):
        read_file_list(Path("/dev/zero"))
    (tmp_path / "long.txt").write_text("a" * 5000 + "\n")
    with pytest.raises(WhisperoptError, match="long.txt:1: longer than 4096 bytes"):
        read_file_list(tmp_path / "long.txt")
    monkeypatch.setattr(inputs, "MAX_LIST_INPUTS", 3)
    (tmp_path / "many.txt").write_text("".join(f"{i}.wav\n" for i in range(4)))
    with pytest.raises(WhisperoptError, match="more than 3 inputs"):
        read_file_list(tmp_path / "many.txt")


def test_cli_files_from_dev_zero_is_one_line(tmp_path, capsys):
    assert main(["transcribe", "--files-from", "/dev/zero", *TR, "-o", str(tmp_path)]) == 2
    assert "larger than 16 MiB" in _error(capsys)


@pytest.mark.slow
def test_same_file_name_in_two_folders_keeps_both_transcripts(tmp_path, tiny_model, librispeech, capsys):
    for sub, k in (("a", 0), ("b", 1)):
        (tmp_path / sub).mkdir()
        shutil.copy(librispeech / FLACS.format(k), tmp_path / sub / "x.flac")
    (tmp_path / "list.txt").write_text("a/x.flac\nb/x.flac\n")
    argv = ["transcribe", "--files-from", str(tmp_path / "list.txt"), *TR, "-o", str(tmp_path / "out"), "-f", "json"]
    assert main(argv) == 0
    durations = {sub: json.loads((tmp_path / "out" / sub / "x.json").read_text())["duration"] for sub in "ab"}
    assert durations["a"] != durations["b"]  # two inputs, two transcripts: neither written over the other
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.json")) == \
        ["a/x.json", "b/x.json"]
    capsys.readouterr()
    assert main(argv) == 0  # a re-run finds both done under the same names
    assert capsys.readouterr().out.count("skipped (outputs exist") == 2


def test_an_input_named_like_its_transcript_is_refused_and_kept(tmp_path, librispeech, capsys, monkeypatch):
    clip = tmp_path / "clip.txt"
    shutil.copy(librispeech / FLACS.format(0), clip)
    before = clip.read_bytes()
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert main(["transcribe", "clip.txt", *TR, "-o", ".", "-f", "txt", *extra]) == 2
        assert "its transcript clip.txt would overwrite that input itself" in _error(capsys)
    assert clip.read_bytes() == before


# ---------------------------------------------------------------- results folders: names, records, numbers

@pytest.fixture
def results(tmp_path):
    return _write_results(tmp_path / "res")


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_run_json_recipe_name_cannot_reach_outside(results, tmp_path, capsys):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "evil.status.json").write_text(json.dumps({"recipe": "evil", "status": "ok"}))
    _edit_json(results / "run.json", lambda d: d["config"]["recipes"].append("../outside/evil"))
    assert main(["report", str(results), "--format", "json"]) == 2
    line = _error(capsys)
    assert "run.json" in line and "'../outside/evil' is not a recipe name" in line


def test_status_file_linked_outside_is_refused(results, tmp_path, capsys):
    status = results / "torch-fp32.status.json"
    shutil.move(status, tmp_path / "elsewhere.json")
    status.symlink_to(tmp_path / "elsewhere.json")
    assert main(["report", str(results), "--format", "json"]) == 2
    assert "leads outside" in _error(capsys)
    with pytest.raises(WhisperoptError, match="not a plain relative path"):
        confined(results, "../x")


@pytest.mark.parametrize("fname, edit, want", [
    ("torch-fp32.status.json", lambda d: d.pop("recipe"), "status file .*torch-fp32.status.json .*no 'recipe'"),
    ("torch-fp32.status.json", lambda d: d.update(size_bytes="big"), "torch-fp32.status.json .*'size_bytes'"),
    ("torch-fp32.status.json", lambda d: d.update(recipe="onnx-int4"), "status of 'onnx-int4'"),
    ("torch-fp32.status.json", lambda d: d.update(status="done"), "'status' is \"done\""),
    ("torch-fp32.status.json", lambda d: d.update(throughput=[{"batch": 0, "rtfx": 1.0, "run_ram_mb": None,
                                                               "same_text": 1.0}]), "'throughput'"),
    ("run.json", lambda d: d["config"].update(dataset=5), "run.json .*'dataset' is '5'"),
    ("run.json", lambda d: d["config"].update(limit=-3), "run.json .*--limit"),
])
def test_malformed_records_name_their_file(results, capsys, fname, edit, want):
    _edit_json(results / fname, edit)
    assert main(["report", str(results), "--format", "json"]) == 2
    assert __import__("re").search(want, _error(capsys))


@pytest.mark.parametrize("edit, want", [(lambda r: r.pop("latency_s"), "rows.jsonl:1: .*no 'latency_s'"),
                                        (lambda r: r.update(batch=0), "rows.jsonl:1: .*'batch' is 0"),
                                        (lambda r: r.update(words={"hits": 1}), "rows.jsonl:1: .*'words'")])
def test_rows_missing_a_key_name_file_and_line(results, capsys, edit, want):
    path = results / "torch-fp32.rows.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    edit(rows[0])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(results), "--format", "json"]) == 2
    assert __import__("re").search(want, _error(capsys))


def test_non_finite_numbers_become_null_in_summary_json(results, capsys):
    path = results / "torch-fp32.rows.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["latency_s"], rows[1]["duration_s"] = float("nan"), 1e999
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # bare NaN / Infinity, as json.dumps writes them
    assert main(["report", str(results), "--format", "json"]) in (0, 1)
    text = (results / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    row = next(r for r in summary["recipes"] if r["recipe"] == "torch-fp32")
    assert row["eval_s"] is None and row["audio_s"] is None


def test_every_json_writer_writes_null_for_non_finite(tmp_path):
    import numpy as np

    assert json.loads(json_text({"a": float("nan"), "b": [np.float32("inf"), -float("inf"), 1.5]})) == \
        {"a": None, "b": [None, None, 1.5]}
    atomic_write_json(tmp_path / "x.json", {"v": float("inf")})
    assert json.loads((tmp_path / "x.json").read_text()) == {"v": None}


def test_a_symlinked_output_directory_is_refused(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "keep").write_text("user's file")
    (tmp_path / "out").symlink_to(tmp_path / "target")
    with pytest.raises(WhisperoptError, match="is a symbolic link"):
        with atomic_dir(tmp_path / "out"):
            pass
    assert (tmp_path / "target" / "keep").read_text() == "user's file"


BAD = ["DEL", None, "x", [], {}, -1, 0, float("nan"), 1e999, True]


def _report(d: Path) -> str | None:
    """What `whisperopt report` does with a results folder, less the plots and the page (their inputs are these
    summary rows): None, or the one-line error; anything else is raised."""
    from whisperopt.report import markdown, recommendation_lines, rich_table, summarise, write_reports

    try:
        summary = summarise(d)
        write_reports(summary, d)
        rich_table(summary, "all")
        markdown(summary)
        recommendation_lines(summary["recommendation"])
    except WhisperoptError as exc:
        return str(exc)
    json.loads((d / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    return None


def _status_with_every_record(base: Path) -> None:
    """torch-fp32's status with the nested records a bench can write: throughput, packed pass, components."""
    _edit_json(base / "torch-fp32.status.json", lambda st: st.update(
        throughput=[{"batch": 1, "rtfx": 3.0, "run_ram_mb": 10.0, "same_text": 1.0},
                    {"batch": 4, "rtfx": 6.0, "run_ram_mb": 12.0, "same_text": 0.9}],
        packed={"gap_s": 1.0, "batch": 1, "utterances": 3, "windows": 1, "alone": 1, "rtfx": 5.0, "wer_delta": 0.5,
                "wer_delta_ci": [0.1, 0.9], "wer_delta_significant": True, "note": "n"},
        manifest={"components": {"encoder": {"bin_bytes": 100, "compression": 2.0}, "decoder": {"bin_bytes": 9}}},
        encoder_ms_median=3.0, decoder_ms_median=2.0, decode_settings={"beam": 1}, options={"window": "30"}))


def _leaves(obj, prefix=()):
    """Every key path of a JSON record (list items: the first two)."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj[:2]) if isinstance(obj, list) else ()
    for k, v in items:
        yield (*prefix, k)
        yield from _leaves(v, (*prefix, k))


def _mutated(record, path, bad):
    record = json.loads(json.dumps(record))
    parent = record
    for k in path[:-1]:
        parent = parent[k]
    if bad == "DEL":
        parent.pop(path[-1])
    else:
        parent[path[-1]] = bad
    return record


@pytest.mark.slow
def test_no_mutation_of_a_results_file_crashes_the_report(tmp_path):
    """Every field (nested ones too) of run.json, a status file, a row and a segment line deleted or given a wrong
    type or a non-finite value: the report reads it, or stops in one line naming the file; never anything else."""
    base = _write_results(tmp_path / "base")
    _status_with_every_record(base)
    files = ["run.json", "torch-fp32.status.json", "torch-fp32.rows.jsonl", "torch-fp32.segments.jsonl"]
    seen = 0
    for fname in files:
        lines = (base / fname).read_text().splitlines()
        record = json.loads(lines[0]) if fname.endswith("jsonl") else json.loads("\n".join(lines))
        for path in _leaves(record):
            for bad in BAD:
                d = tmp_path / "case"
                shutil.rmtree(d, ignore_errors=True)
                shutil.copytree(base, d)
                first = json.dumps(_mutated(record, path, bad))
                (d / fname).write_text("\n".join([first, *lines[1:]] if fname.endswith("jsonl") else [first]) + "\n")
                error = _report(d)
                assert error is None or fname in error, (fname, path, bad, error)
                seen += 1
    assert seen > 500
