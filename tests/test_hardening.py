"""Faults a benchmark must survive with nothing measured lost or counted twice: two benches on one results directory,
a torn last row, the runner stopped by a signal (real processes and signals, synthetic tiny, real LibriSpeech)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whisperopt.bench.results import LOCK_FILE, append_row, read_rows, repair_rows

from .conftest import ctrl_c_works

CLI = [sys.executable, "-c", "import sys; from whisperopt.cli import main; sys.exit(main())"]


def _bench(out: Path, limit: int, recipes: str = "torch-fp32") -> list[str]:
    return [*CLI, "bench", "--model", "synthetic:tiny", "--recipes", recipes, "--limit", str(limit),
            "--out", str(out), "--fidelity-utterances", "0", "--threads", "1"]


def _workers(out: Path) -> list[int]:
    """pids of bench workers writing into ``out`` (their job files name its rows file)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"whisperopt.bench.worker" in cmd and len(cmd) > cmd.index(b"whisperopt.bench.worker") + 2:
            try:  # python -m whisperopt.bench.worker MODE JOB.json
                job = json.loads(Path(cmd[cmd.index(b"whisperopt.bench.worker") + 2].decode()).read_text())
            except (OSError, ValueError):
                continue
            if str(out) in str(job.get("rows_path")):
                pids.append(int(proc.name))
    return pids


def _wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_second_bench_on_the_same_results_dir_refuses(tmp_path, tiny_model, librispeech):
    out = tmp_path / "res"
    first = subprocess.Popen(_bench(out, 6), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (out / LOCK_FILE).exists() and (out / LOCK_FILE).read_text().strip(), 120, "the lock")
        second = subprocess.run(_bench(out, 6), capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first bench ended before the second started; the test proves nothing"
        assert second.returncode == 2
        err = [line for line in second.stderr.splitlines() if line.startswith("whisperopt:")]
        assert err == [f"whisperopt: error: {out} is in use by another whisperopt bench (pid {first.pid}); wait for "
                       "it to finish or use another --out"]
        assert first.wait(600) == 0
    finally:
        if first.poll() is None:
            first.kill()
    rows = read_rows(out / "torch-fp32.rows.jsonl")
    lines = [x for x in (out / "torch-fp32.rows.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) == len(lines) == 6  # measured once, by the first bench only
    # the lock is released with its holder: the same command now runs (and finds everything measured)
    assert subprocess.run(_bench(out, 6), capture_output=True, timeout=300).returncode == 0


@pytest.mark.slow
def test_torn_last_row_is_dropped_and_measured_again(tmp_path, tiny_model, librispeech):
    out = tmp_path / "res"
    assert subprocess.run(_bench(out, 4), capture_output=True, timeout=600).returncode == 0
    rows_file = out / "torch-fp32.rows.jsonl"
    ids = [r["id"] for r in read_rows(rows_file)]
    size = rows_file.stat().st_size
    os.truncate(rows_file, size - 7)  # a crash mid-write: the last row loses its end
    assert len(read_rows(rows_file)) == 3
    assert subprocess.run(_bench(out, 4), capture_output=True, timeout=600).returncode == 0
    lines = rows_file.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # every line is one valid row again
    assert [json.loads(line)["id"] for line in lines] == ids  # the torn one re-measured, none doubled
    summary = json.loads((out / "summary.json").read_text())
    row = next(r for r in summary["recipes"] if r["recipe"] == "torch-fp32")
    assert row["utterances"] == 4 and row["complete"]


def test_repair_rows_cuts_only_a_torn_tail(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "hyp')
    assert repair_rows(path) == len('{"id": "c", "hyp')
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    assert repair_rows(path) == 0  # a whole file is left alone
    path.write_text('{"id": "a"}\n{"id": "a"}\nnot json\n{"id": "b"}\n')
    assert [r["id"] for r in read_rows(path)] == ["a", "b"]  # a doubled or invalid line never counts twice


def test_sighup_and_sigterm_share_the_runners_interrupt():
    """SIGHUP gets the handler SIGTERM gets (the subprocess test below sends SIGTERM and SIGINT only): both raise
    KeyboardInterrupt in the main thread, and the old handlers come back after the run."""
    from whisperopt.bench.runner import _signals_interrupt

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    with _signals_interrupt():
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
        assert handlers[signal.SIGTERM] is handlers[signal.SIGHUP] and callable(handlers[signal.SIGHUP])
        with pytest.raises(KeyboardInterrupt, match="SIGHUP"):
            handlers[signal.SIGHUP](signal.SIGHUP, None)
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])  # SIGHUP: the SIGTERM handler (test above)
def test_stopping_the_runner_stops_its_worker(tmp_path, tiny_model, librispeech, sig):
    out = tmp_path / "res"
    runner = subprocess.Popen(_bench(out, 40), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=ctrl_c_works)
    try:
        _wait_for(lambda: read_rows(out / "torch-fp32.rows.jsonl"), 300, "the first measured row")
        workers = _workers(out)
        assert workers
        runner.send_signal(sig)
        code = runner.wait(60)
        assert code != 0
        _wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in workers), 30, "the worker to exit")
        assert "Traceback" not in runner.stderr.read()
    finally:
        if runner.poll() is None:
            runner.kill()
    before = len(read_rows(out / "torch-fp32.rows.jsonl"))
    time.sleep(2)
    assert len(read_rows(out / "torch-fp32.rows.jsonl")) == before  # nobody writes rows any more


@pytest.mark.slow
def test_a_killed_runner_takes_its_worker_down(tmp_path, tiny_model, librispeech):
    out = tmp_path / "res"
    runner = subprocess.Popen(_bench(out, 40), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: read_rows(out / "torch-fp32.rows.jsonl"), 300, "the first measured row")
        workers = _workers(out)
        assert workers
        runner.kill()  # SIGKILL: no handler runs; the worker must notice its parent is gone
        runner.wait(30)
        _wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in workers), 30, "the orphaned worker to exit")
    finally:
        if runner.poll() is None:
            runner.kill()


# --- property-based: the row file's resume logic under any truncation point and duplicated lines ---

_row = st.fixed_dictionaries({"id": st.text(alphabet="0123456789-", min_size=1, max_size=12),
                              "text": st.text(max_size=40), "latency_s": st.floats(0, 100, allow_nan=False)})


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=12, unique_by=lambda r: r["id"]),
       repeats=st.lists(st.integers(0, 11), max_size=6), cut=st.floats(0, 1))
def test_resume_keeps_every_whole_row_once_under_any_truncation(tmp_path_factory, rows, repeats, cut):
    path = tmp_path_factory.mktemp("rows") / "r.rows.jsonl"
    written = rows + [rows[i % len(rows)] for i in repeats]  # a row written twice counts once
    with open(path, "w", encoding="utf-8") as f:
        for row in written:
            append_row(f, row)
    data = path.read_bytes()
    keep = int(cut * len(data))
    path.write_bytes(data[:keep])  # a crash at any byte
    whole = data[:keep].count(b"\n")  # lines that were completely written
    survivors = {r["id"] for r in written[:whole]}

    repair_rows(path)
    assert path.read_bytes() == b"" or path.read_bytes().endswith(b"\n")
    assert {r["id"] for r in read_rows(path)} == survivors  # every whole row kept, the torn one dropped
    with open(path, "a", encoding="utf-8") as f:  # resume: measure what has no row yet
        for row in rows:
            if row["id"] not in survivors:
                append_row(f, row)
    again = read_rows(path)
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in rows)  # each utterance exactly once
    assert all(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())  # no merged lines
