"""Faults outside the benchmark's own processes: unusable, read-only, full or damaged caches; a full or damaged
results directory; bad flags. Each must end in one line and a non-zero exit, never a traceback or a silently wrong
result (real CLI, real engines, synthetic tiny, real LibriSpeech; tmpfs and read-only bind mounts where root may
mount them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whisperopt.cli import main
from whisperopt.files import link_or_copy

CLI = [sys.executable, "-c", "import sys; from whisperopt.cli import main; sys.exit(main())"]
FLAC = "LibriSpeech/test-clean/1089/134686/1089-134686-0000.flac"


def _cli(args: list[str], cache: Path | str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if cache is not None:
        env["WHISPEROPT_CACHE"] = str(cache)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess | tuple[int, str], code: int = 2) -> str:
    rc, err = (proc.returncode, proc.stderr) if isinstance(proc, subprocess.CompletedProcess) else proc
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("whisperopt: error:")]
    assert rc == code and lines, (rc, err)
    return lines[-1]


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def can_mount(tmp_path_factory) -> None:
    probe = tmp_path_factory.mktemp("mount-probe")
    try:
        _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe))
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("mounting tmpfs / read-only bind mounts needs root (CAP_SYS_ADMIN); not available here")
    subprocess.run(["umount", str(probe)], check=True)


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory, tiny_model) -> Path:
    """A private cache holding the session's synthetic tiny checkpoint (hard links: same bytes, same mtimes, so the
    same fingerprint) and a ct2-int8 built from it once."""
    cache = tmp_path_factory.mktemp("built") / "cache"
    src = tiny_model.path
    dst = cache / "models" / src.name
    dst.mkdir(parents=True)
    for f in src.iterdir():
        link_or_copy(f, dst / f.name)
    proc = _cli(["build", "--model", "synthetic:tiny", "--recipes", "ct2-int8"], cache)
    assert proc.returncode == 0, proc.stderr
    return cache


@pytest.fixture
def own_cache(tmp_path, built_cache) -> Path:
    """This test's copy of ``built_cache`` (artifacts copied, so damaging them leaves the module's intact)."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    subprocess.run(["cp", "-a", str(built_cache / "models" / "synthetic-tiny"), str(cache / "models")], check=True)
    subprocess.run(["cp", "-a", str(built_cache / "artifacts"), str(cache)], check=True)
    return cache


def _artifact(cache: Path, recipe: str) -> Path:
    return next((cache / "artifacts").glob(f"synthetic-tiny-*/{recipe}"))


@pytest.mark.slow
def test_an_uncreatable_cache_is_one_line_in_bench_and_transcribe(tmp_path, librispeech):
    bench = _cli(["bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32", "--limit", "3",
                  "--out", str(tmp_path / "res")], cache="/proc/wo-cache")
    assert "cache directory /proc/wo-cache cannot be created" in _one_line_error(bench)
    tr = _cli(["transcribe", "--model", "synthetic:tiny", str(librispeech / FLAC), "-o", str(tmp_path / "t")],
              cache="/proc/wo-cache")
    assert "WHISPEROPT_CACHE" in _one_line_error(tr)


@pytest.mark.slow
def test_a_damaged_artifact_is_found_and_rebuilt(own_cache, monkeypatch, capsys):
    monkeypatch.setenv("WHISPEROPT_CACHE", str(own_cache))
    args = ["build", "--model", "synthetic:tiny", "--recipes", "ct2-int8"]
    art = _artifact(own_cache, "ct2-int8")
    manifest = json.loads((art / "manifest.json").read_text())
    weights = art / "model.bin"
    assert manifest["integrity"]["model.bin"]["bytes"] == weights.stat().st_size
    good = weights.read_bytes()
    capsys.readouterr()

    os.truncate(weights, len(good) // 2)  # half a file: the size check on every load finds it
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"model.bin has {len(good) // 2} bytes, the build wrote {len(good)}" in out and "built  ct2-int8" in out
    assert weights.read_bytes() == good  # rebuilt, same bytes (deterministic conversion)

    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0xFF  # same size, other bytes: only the digest finds it (build always checks it)
    weights.write_bytes(bytes(flipped))
    assert main(args) == 0
    assert "sha256 differs" in capsys.readouterr().out and weights.read_bytes() == good

    (art / "manifest.json").write_text('{"recipe": "ct2-')  # a torn manifest
    assert main(args) == 0
    assert "manifest.json is unreadable" in capsys.readouterr().out
    assert main(args) == 0 and "cached ct2-int8" in capsys.readouterr().out


@pytest.mark.slow
def test_sizes_are_checked_on_every_load_digests_with_verify(own_cache, tmp_path, librispeech):
    weights = _artifact(own_cache, "ct2-int8") / "model.bin"
    flipped = bytearray(weights.read_bytes())
    flipped[100] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    bench = ["bench", "--model", "synthetic:tiny", "--recipes", "ct2-int8", "--limit", "1", "--warmup", "0",
             "--fidelity-utterances", "0", "--threads", "1"]
    quick = _cli([*bench, "--out", str(tmp_path / "a")], own_cache)
    assert quick.returncode == 0 and "ct2-int8: cached" in quick.stdout  # same size: not read twice without --verify
    verified = _cli([*bench, "--out", str(tmp_path / "b"), "--verify"], own_cache)
    assert verified.returncode == 0, verified.stderr
    assert "sha256 differs" in verified.stdout and "ct2-int8: built" in verified.stdout


@pytest.mark.slow
def test_read_only_cache_serves_what_it_holds_and_names_rebuild_when_damaged(can_mount, own_cache, tmp_path,
                                                                               librispeech):
    ro = tmp_path / "ro-cache"
    ro.mkdir()
    _mount("--bind", str(own_cache), str(ro))
    try:
        _mount("-o", "remount,ro,bind", str(ro))
        audio = str(librispeech / FLAC)
        ok = _cli(["transcribe", "--model", "synthetic:tiny", "--recipe", "ct2-int8", audio, "-f", "txt",
                   "-o", str(tmp_path / "t"), "--max-new-tokens", "8"], ro)
        assert ok.returncode == 0, ok.stderr
        assert (tmp_path / "t" / "1089-134686-0000.txt").exists()

        weights = _artifact(own_cache, "ct2-int8") / "model.bin"  # damaged through the writable path
        os.truncate(weights, weights.stat().st_size - 1000)
        tr = _cli(["transcribe", "--model", "synthetic:tiny", "--recipe", "ct2-int8", audio, "-o",
                   str(tmp_path / "t2")], ro)
        line = _one_line_error(tr)
        assert "cached ct2-int8 is damaged" in line and "--rebuild" in line and "read-only file system" in line

        out = tmp_path / "res"
        bench = _cli(["bench", "--model", "synthetic:tiny", "--recipes", "ct2-int8", "--limit", "1", "--warmup", "0",
                      "--fidelity-utterances", "0", "--out", str(out)], ro)
        line = _one_line_error(bench, code=1)  # a recipe failed: non-zero, and the summary is still written
        assert "ct2-int8 failed" in line and "--rebuild" in line
        summary = json.loads((out / "summary.json").read_text())
        assert [r["status"] for r in summary["recipes"]] == ["failed"]
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.slow
def test_a_full_results_disk_is_one_line_and_leaves_no_temp_files(can_mount, tmp_path, tiny_model, librispeech):
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk))
    try:
        with open(disk / "fill", "wb", buffering=0) as f:  # fill it to the last block
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        proc = _cli(["bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32", "--limit", "1",
                     "--fidelity-utterances", "0", "--out", str(disk / "res")])
        line = _one_line_error(proc)
        assert "no space left on device" in line and str(disk) in line
        assert not [p.name for p in disk.rglob("*") if "tmp" in p.name], list(disk.rglob("*"))
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_model, librispeech) -> Path:
    """A small finished benchmark to damage (module scope: one run)."""
    out = tmp_path_factory.mktemp("faults") / "res"
    proc = _cli(["bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32,ct2-int8", "--limit", "2",
                 "--warmup", "0", "--fidelity-utterances", "0", "--threads", "1", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    return out


def _report(out: Path, capsys) -> tuple[int, str]:
    rc = main(["report", str(out), "--format", "json"])
    return rc, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["empty", "torn", "not an object"])
def test_report_on_a_damaged_results_dir(results, tmp_path, capsys, damage):
    text = {"empty": "", "torn": '{"config": {"model": "synth', "not an object": "[1, 2]"}[damage]
    for name, what in (("run.json", "benchmark settings"), ("environment.json", "environment record")):
        out = tmp_path / name
        subprocess.run(["cp", "-a", str(results), str(out)], check=True)
        (out / name).write_text(text)
        line = _one_line_error(_report(out, capsys))
        assert what in line and "damaged" in line or "not whisperopt's" in line, line

    out = tmp_path / "status"
    subprocess.run(["cp", "-a", str(results), str(out)], check=True)
    (out / "ct2-int8.status.json").write_text(text)
    rc, err = _report(out, capsys)  # the other recipe is still reported; the damaged one is marked, exit 1
    assert rc == 1 and "Traceback" not in err and "ct2-int8 failed: status file" in err
    summary = json.loads((out / "summary.json").read_text())
    assert {r["recipe"]: r["status"] for r in summary["recipes"]} == {"torch-fp32": "ok", "ct2-int8": "failed"}


@pytest.mark.slow
def test_a_damaged_status_is_measured_again_by_the_next_run(results, tmp_path):
    out = tmp_path / "res"
    subprocess.run(["cp", "-a", str(results), str(out)], check=True)
    (out / "ct2-int8.status.json").write_text("")
    proc = _cli(["bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32,ct2-int8", "--limit", "2",
                 "--warmup", "0", "--fidelity-utterances", "0", "--threads", "1", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "done  torch-fp32" in proc.stdout and "done  ct2-int8" not in proc.stdout
    assert json.loads((out / "ct2-int8.status.json").read_text())["status"] == "ok"
    rows = [json.loads(line) for line in (out / "ct2-int8.rows.jsonl").read_text().splitlines()]
    assert len(rows) == 2 == len({r["id"] for r in rows})  # resumed: nothing measured twice


@pytest.mark.parametrize("flag, value, message", [
    ("--threads", "0", "--threads must be positive"),
    ("--beam-size", "100000", "--beam-size"),
    ("--batch-size", "0", "--batch-size must be between 1 and 64, got 0"),
    ("--throughput-batches", "4,x", "--throughput-batches expects comma-separated batch sizes"),
    ("--throughput-batches", "0", "--throughput-batches: each batch size must be 1-"),
    ("--throughput-batches", "4,4", "--throughput-batches lists a batch size twice"),
])
def test_bench_rejects_absurd_flags_before_any_work(tmp_path, capsys, flag, value, message):
    rc = main(["bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32", "--limit", "1", flag, value,
               "--out", str(tmp_path / "res")])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_a_full_cache_says_no_space_left(can_mount, tmp_path, tiny_model):
    """torch.save on a full disk says "inline_container.cc: unexpected pos"; the user must read "no space left"."""
    disk = tmp_path / "disk"
    disk.mkdir()
    need = sum(f.stat().st_size for f in tiny_model.path.iterdir())
    _mount("-t", "tmpfs", "-o", f"size={need + (8 << 20)}", "tmpfs", str(disk))
    try:
        (disk / "models").mkdir()
        subprocess.run(["cp", "-a", str(tiny_model.path), str(disk / "models")], check=True)
        proc = _cli(["build", "--model", "synthetic:tiny", "--recipes", "torch-int8-dynamic"], cache=disk)
        line = _one_line_error(proc)
        assert "1 recipe(s) failed to build" in line
        assert "failed torch-int8-dynamic: cannot write" in proc.stderr and "no space left on device" in proc.stderr
        assert not [p for p in disk.rglob(".*")], list(disk.rglob(".*"))  # no half-built artifact left behind
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_bench_refuses_a_language_the_checkpoint_lacks(tmp_path, capsys, tiny_model):
    rc = main(["bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32", "--limit", "1", "--language", "xx",
               "--out", str(tmp_path / "res")])
    assert rc == 2 and "unknown language code 'xx'" in capsys.readouterr().err
    assert not list((tmp_path / "res").glob("*.rows.jsonl"))  # refused before any worker ran


def test_cuda_without_a_device_is_one_line(tmp_path, librispeech, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: this case is about its absence")
    rc = main(["transcribe", "--model", "synthetic:tiny", "--device", "cuda", str(librispeech / FLAC),
               "-o", str(tmp_path)])
    assert rc == 2 and "no CUDA device here" in capsys.readouterr().err


def test_a_manifest_that_is_not_utf8_names_its_line(tmp_path, librispeech, capsys):
    manifest = tmp_path / "m.jsonl"
    line = json.dumps({"audio": str(librispeech / FLAC), "text": "x"}).encode()
    manifest.write_bytes(line + b"\n" + b'{"audio": "caf\xe9.flac", "text": "x"}\n')
    rc = main(["bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32", "--dataset", str(manifest),
               "--out", str(tmp_path / "res")])
    assert rc == 2 and f"{manifest}:2: not UTF-8 text" in capsys.readouterr().err


@pytest.mark.slow
def test_report_into_a_closed_pipe_is_quiet(results):
    proc = subprocess.Popen([*CLI, "report", str(results), "--format", "markdown"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # `whisperopt report ... | head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_an_abandoned_half_build_is_cleared(tmp_path):
    from whisperopt.files import atomic_dir

    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".ct2-int8-{dead.pid}-x1y2"  # what kill -9 during a build leaves
    left.mkdir()
    (left / "model.bin").write_bytes(b"half")
    alive = tmp_path / f".ct2-int8-{os.getpid()}-z3"  # a build in progress in a live process: kept
    alive.mkdir()
    with atomic_dir(tmp_path / "ct2-int8") as tmp:
        (tmp / "model.bin").write_bytes(b"whole")
    assert not left.exists() and alive.exists() and (tmp_path / "ct2-int8" / "model.bin").read_bytes() == b"whole"


@pytest.mark.slow
def test_truncated_synthetic_weights_are_made_again(own_cache, monkeypatch):
    from whisperopt.models import resolve_model

    monkeypatch.setenv("WHISPEROPT_CACHE", str(own_cache))
    weights = next((own_cache / "models" / "synthetic-tiny").glob("*.safetensors"))
    size = weights.stat().st_size
    os.truncate(weights, size // 2)
    model = resolve_model("synthetic:tiny")
    assert next(model.path.glob("*.safetensors")).stat().st_size == size


@pytest.mark.slow
def test_fault_matrix_fast_form_passes(tmp_path, tiny_model, librispeech, whisperopt_cache):
    """The fault matrix's fast form (``tools/fault_matrix.py --fast``: group S, security, issue 24) against this
    checkout: traversal in data-derived names, output collisions, unbounded inputs, non-finite JSON, malformed
    results files, a planted pickle, serve's key; every case must pass (its private cache is seeded from ours)."""
    tool = Path(__file__).resolve().parents[1] / "tools" / "fault_matrix.py"
    env = {**os.environ, "WHISPEROPT_SEED_CACHE": str(whisperopt_cache)}
    proc = subprocess.run([sys.executable, str(tool), "--fast", "--workdir", str(tmp_path / "matrix"), "--json",
                           str(tmp_path / "matrix.json")], env=env, capture_output=True, text=True, timeout=1800)
    report = json.loads((tmp_path / "matrix.json").read_text())
    failed = [f"{c['name']}: {'; '.join(c['problems'])}" for c in report["cases"] if c["verdict"] != "PASS"]
    assert proc.returncode == 0 and not failed, "\n".join(failed) or proc.stdout[-3000:]
    assert report["totals"]["cases"] >= 20 and report["totals"]["tracebacks"] == 0
