"""``--ray``: bench and transcribe on a local Ray cluster (a head and a second node process on 127.0.0.1, started
here), compared with the local runner; worker and driver deaths; the hardware-aware speed-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from whisperopt.bench.results import read_rows

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

UTTERANCES = 6


@pytest.fixture(scope="module")
def cluster(whisperopt_cache, tiny_en):
    """A Ray cluster of two nodes on this machine: the head and a second node process, 2 CPUs each."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=2)
    c.wait_for_nodes()
    yield c.address
    c.shutdown()


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "whisperopt.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def _bench_args(out: Path, *extra: str) -> list[str]:
    return ["bench", "--model", "tiny.en", "--recipes", "ct2-int8", "--limit", str(UTTERANCES), "--threads", "1",
            "--fidelity-utterances", "0", "--out", str(out), *extra]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_bench_on_two_nodes_gives_the_local_rows(cluster, tmp_path):
    local = _cli(*_bench_args(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    dist = _cli(*_bench_args(tmp_path / "ray", "--ray", cluster, "--shard-size", "3",
                             "--fidelity-utterances", "2"))
    assert dist.returncode == 0, dist.stdout + dist.stderr
    assert "ray: 2 node(s)" in dist.stdout and "2 shard task(s)" in dist.stdout, dist.stdout
    mine = _lines(tmp_path / "ray" / "ct2-int8.rows.jsonl")
    theirs = {r["id"]: r for r in _lines(tmp_path / "local" / "ct2-int8.rows.jsonl")}
    assert len(mine) == UTTERANCES and {r["id"] for r in mine} == set(theirs)  # each utterance once
    assert {r["id"]: r["hypothesis"] for r in mine} == {i: r["hypothesis"] for i, r in theirs.items()}
    assert len({r["node"] for r in mine}) == 2  # both nodes measured (shards spread)
    assert all(r["cpu_model"] for r in mine) and all(r["node"] for r in theirs.values())
    status = json.loads((tmp_path / "ray" / "ct2-int8.status.json").read_text())
    assert status["status"] == "ok" and status["utterances"] == UTTERANCES and len(status["ray"]["nodes"]) == 2
    assert status["teacher_forced_agreement"] is not None  # the final task ran the fidelity probes
    assert len(_lines(tmp_path / "ray" / "ct2-int8.segments.jsonl")) == 2  # one resource segment per shard
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    local_summary = json.loads((tmp_path / "local" / "summary.json").read_text())
    assert summary["recipes"][0]["wer"] == pytest.approx(local_summary["recipes"][0]["wer"])


def _wait_rows(path: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while len(read_rows(path)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no rows"
        time.sleep(0.2)


def _shard_worker() -> psutil.Process:
    """The Ray worker process running a shard task (the parent of a bench worker process)."""
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "whisperopt.bench.worker" in cmd and "run" in cmd:
            return p.parent()
    raise AssertionError("no shard task running")


@pytest.mark.slow
def test_driver_and_worker_killed_lose_no_row(cluster, tmp_path):
    """The driver killed with SIGKILL mid-run: every row it had is kept and a re-run measures only the rest. Then a
    Ray worker killed with SIGKILL mid-task: Ray retries the task and no row is lost or written twice."""
    out = tmp_path / "r"
    rows = out / "ct2-int8.rows.jsonl"
    cmd = [sys.executable, "-m", "whisperopt.cli", *_bench_args(out, "--ray", cluster, "--shard-size", "3")]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_rows(rows, 1, first)
    first.kill()
    first.wait()
    kept = {r["id"]: r for r in _lines(rows)}
    assert 1 <= len(kept) < UTTERANCES
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_rows(rows, len(kept) + 1, second)
    victim = _shard_worker()
    victim.send_signal(signal.SIGKILL)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    final = _lines(rows)
    ids = [r["id"] for r in final]
    assert len(ids) == len(set(ids)) == UTTERANCES, ids  # nothing lost, nothing twice
    assert all(next(r for r in final if r["id"] == i) == row for i, row in kept.items())  # kept rows unchanged
    status = json.loads((out / "ct2-int8.status.json").read_text())
    assert status["status"] == "ok", status


@pytest.mark.slow
def test_transcribe_on_ray_writes_the_local_outputs(cluster, librispeech, tmp_path):
    files = sorted((librispeech / "LibriSpeech" / "test-clean").rglob("*.flac"))[:3]
    bad = tmp_path / "truncated.flac"
    bad.write_bytes(files[0].read_bytes()[:5000])  # a header and no audio: fails when decoded, on its node
    common = ["--model", "tiny.en", "--recipe", "ct2-int8", "--beam-size", "1",
              "-f", "txt,srt", "--threads", "1"]
    local = _cli("transcribe", *map(str, files), *common, "-o", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    listing = tmp_path / "inputs.txt"  # many files: a list, as `--files-from` reads it
    listing.write_text("# three utterances and a broken file\n" + "\n".join(map(str, [*files, bad])) + "\n")
    dist = _cli("transcribe", "--files-from", str(listing), *common, "-o", str(tmp_path / "ray"), "--ray", cluster)
    assert dist.returncode == 2, dist.stdout + dist.stderr
    assert "ray: 4 transcriber(s) of 1 CPU(s) on 2 node(s) for 4 input(s)" in dist.stderr, dist.stderr
    assert f"error: {bad}:" in dist.stderr and "1 of 4 input(s) failed" in dist.stderr, dist.stderr
    assert "whisperopt-ray-" not in dist.stderr  # the error names the user's file, not the node's copy
    for f in files:
        for ext in ("txt", "srt"):
            mine = (tmp_path / "ray" / f"{f.stem}.{ext}").read_text()
            assert mine == (tmp_path / "local" / f"{f.stem}.{ext}").read_text() and mine.strip()


def test_files_from_reads_a_list_or_a_manifest(tmp_path):
    from whisperopt.errors import WhisperoptError
    from whisperopt.transcribe.inputs import read_file_list

    (tmp_path / "a.txt").write_text("# comment\n\nx.flac\n/abs/y.wav\n")
    assert read_file_list(tmp_path / "a.txt") == [str(tmp_path / "x.flac"), "/abs/y.wav"]
    (tmp_path / "m.jsonl").write_text('{"audio": "sub/z.flac", "text": "hi"}\n')
    assert read_file_list(tmp_path / "m.jsonl") == [str(tmp_path / "sub" / "z.flac")]
    (tmp_path / "bad.jsonl").write_text('{"text": "no audio"}\n')
    with pytest.raises(WhisperoptError, match=r"bad.jsonl:1: each line needs an 'audio' field"):
        read_file_list(tmp_path / "bad.jsonl")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(WhisperoptError, match="lists no inputs"):
        read_file_list(tmp_path / "empty.txt")
    res = _cli("transcribe", "--model", "tiny.en", "--files-from", str(tmp_path / "missing.txt"))
    assert res.returncode == 2 and "missing.txt" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_bench_shard_size_needs_ray(tmp_path):
    res = _cli("bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32", "--shard-size", "2", "--out",
               str(tmp_path / "x"))
    assert res.returncode == 2 and "--shard-size" in res.stderr and "--ray" in res.stderr


@pytest.mark.slow
def test_unreachable_cluster_is_a_one_line_error(tmp_path, librispeech):
    flac = next((librispeech / "LibriSpeech" / "test-clean").rglob("*.flac"))
    res = _cli("transcribe", str(flac), "--model", "synthetic:tiny", "--ray", "127.0.0.1:1", "-o", str(tmp_path),
               timeout=120)
    assert res.returncode == 2, res.stderr
    err = [line for line in res.stderr.splitlines() if line.startswith("whisperopt:")]
    assert err == ["whisperopt: error: cannot connect to the Ray cluster at 127.0.0.1:1: Connection refused (start it "
                   "with `ray start --head`, or leave ADDRESS out to start a local one)"]


def test_ray_missing_says_how_to_install(monkeypatch):
    from whisperopt import cluster
    from whisperopt.errors import WhisperoptError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(WhisperoptError, match=r"pip install 'whisperopt\[ray\]'"):
        cluster.ray_module()


def test_speedup_is_computed_within_one_cpu_model():
    from whisperopt.report.summary import speedup_within_hardware

    def rows(latencies, cpus):
        return [{"id": f"u{i}", "latency_s": lat, "batch": 1, "cpu_model": cpu}
                for i, (lat, cpu) in enumerate(zip(latencies, cpus))]

    base = rows([2.0, 2.0, 4.0, 4.0], ["A", "A", "B", "B"])
    same = rows([1.0, 1.0, 2.0, 2.0], ["A", "A", "B", "B"])
    speed, note = speedup_within_hardware(base, same, "torch-fp32")
    assert speed == pytest.approx(2.0) and "4 of 4" in note and "A: 2" in note
    crossed = rows([1.0, 1.0, 1.0, 1.0], ["B", "B", "A", "A"])  # each utterance on the other CPU than the baseline
    assert speedup_within_hardware(base, crossed, "torch-fp32")[0] is None
    partly = rows([1.0, 1.0, 1.0, 1.0], ["A", "B", "B", "A"])
    speed, note = speedup_within_hardware(base, partly, "torch-fp32")
    assert speed == pytest.approx((2.0 + 4.0) / 2.0) and "2 of 4" in note
    from whisperopt.report.tables import md_notes

    assert md_notes({"recipes": [{"recipe": "r", "hardware_note": note}]}) == [f"- r: **hardware**: {note}"]
    one = rows([1.0] * 4, ["A"] * 4)
    assert speedup_within_hardware(rows([3.0] * 4, ["A"] * 4), one, "torch-fp32") == (pytest.approx(3.0), None)
