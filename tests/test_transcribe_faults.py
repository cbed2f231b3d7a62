"""`whisperopt transcribe` under faults, on real LibriSpeech audio: absurd option values, inputs that are not readable
audio files (symbolic link loops, directories, no permission), a manifest line that is not audio, Ctrl-C and the
re-run that continues, and an output directory that fills up or turns read-only mid-run. Every error is one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisperopt.cli import main
from whisperopt.data import load_audio, load_dataset, load_manifest
from whisperopt.errors import WhisperoptError
from whisperopt.transcribe import TranscribeOptions

from .conftest import TEST_CLEAN, ctrl_c_works

FAST = ["--model", "synthetic:tiny", "--language", "en", "--beam-size", "1", "--temperature", "0",
        "--temperature-increment-on-fallback", "0", "--max-new-tokens", "6", "--threads", "2"]
ALL = ["txt", "srt", "vtt", "json", "tsv"]  # the order write_outputs writes them in
SKIPPED = "skipped (outputs exist; --overwrite to redo)"


@pytest.fixture(scope="module")
def audio(tmp_path_factory, librispeech) -> dict[str, Path]:
    """a.flac: one LibriSpeech utterance (10.4 s); long.flac: 10 of them (~80 s, seconds to decode)."""
    root = tmp_path_factory.mktemp("audio")
    flacs = sorted(TEST_CLEAN.rglob("*.flac"))
    shutil.copy(flacs[0], root / "a.flac")
    sf.write(str(root / "long.flac"), np.concatenate([sf.read(str(f), dtype="float32")[0] for f in flacs[:10]]), 16000)
    return {"a": root / "a.flac", "long": root / "long.flac"}


def _cli(capsys, *argv) -> tuple[int, str, list[str]]:
    code = main(["transcribe", *argv])
    out = capsys.readouterr()
    assert out.err.count("Traceback") == out.err.count("--- Logging error ---"), out.err  # torch's log, not ours
    return code, out.out, [line for line in out.err.splitlines() if line.startswith("whisperopt:")]


def _unprivileged() -> list[str]:
    """A command prefix under which file permissions apply: nothing for a normal user; for root, setpriv without
    CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (root still owns the interpreter, so Python runs)."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if not shutil.which("setpriv") or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE (no setpriv or no CAP_SETPCAP), so "
                    "permissions do not apply")
    return prefix


def _spawn(*argv, prefix=()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, "-m", "whisperopt.cli", "transcribe", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works)


def _errors(stderr: str) -> list[str]:
    """whisperopt's own lines (third-party import noise such as torch's warnings aside); never a traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("whisperopt:")]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited with {proc.returncode} before {path.name}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


def _temporary_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


# --- 1. absurd option values ---

@pytest.mark.parametrize("args,message", [
    (["--beam-size", "100000"], "--beam-size must be between 1 and 64, got 100000"),
    (["--beam-size", "0"], "--beam-size must be between 1 and 64, got 0"),
    (["--best-of", "65"], "--best-of must be between 1 and 64, got 65"),
    (["--batch-size", "100000"], "--batch-size must be between 1 and 64, got 100000"),
    (["--batch-size", "0"], "--batch-size must be between 1 and 64, got 0"),
    (["--max-new-tokens", "445"], "--max-new-tokens must be between 1 and 444, got 445"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be between 1 and 444, got 0"),
    (["--threads", "0"], "--threads must be at least 1, got 0 (leave it out to use all cores)"),
    (["--threads", "-2"], "--threads must be at least 1, got -2 (leave it out to use all cores)"),
])
def test_absurd_values_are_refused_before_anything_loads(tmp_path, capsys, audio, args, message):
    code, out, err = _cli(capsys, str(audio["a"]), *FAST, *args, "-o", str(tmp_path / "out"))
    assert code == 2 and err == [f"whisperopt: error: {message}"] and out == ""
    assert not list(tmp_path.glob("out/*"))


def test_the_limits_themselves_are_accepted():
    TranscribeOptions(beam_size=64, best_of=64, batch_size=64, max_new_tokens=444).check()
    TranscribeOptions(beam_size=1, best_of=1, batch_size=1, max_new_tokens=1).check()


# --- 2. inputs that are not readable audio files ---

def test_unreadable_inputs_say_why(tmp_path, capsys, audio):
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "dangling.flac").symlink_to("nowhere.flac")
    (tmp_path / "folder.flac").mkdir()
    (tmp_path / "empty.flac").write_bytes(b"")
    names = [str(tmp_path / n) for n in ("loop", "dangling.flac", "folder.flac", "empty.flac", "missing.flac")]
    code, out, err = _cli(capsys, *names, *FAST, "-o", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert err == [f"whisperopt: error: {names[0]}: symbolic link loop",
                   f"whisperopt: error: {names[1]}: broken symbolic link (to nowhere.flac)",
                   f"whisperopt: error: {names[2]}: is a directory, not an audio file",
                   f"whisperopt: error: {names[3]}: empty audio file",
                   f"whisperopt: error: {names[4]}: audio file not found",
                   f"whisperopt: error: 5 of 5 input(s) failed: {', '.join(names)}"]
    for name, why in [(names[0], "symbolic link loop"), (names[2], "is a directory")]:
        with pytest.raises(WhisperoptError, match=f"^{name}: {why}"):  # the data layer words it the same
            load_audio(name)


def test_permission_denied(tmp_path, audio):
    prefix = _unprivileged()
    locked = tmp_path / "locked.flac"
    shutil.copy(audio["a"], locked)
    locked.chmod(0)
    proc = _spawn(str(locked), *FAST, "-o", str(tmp_path / "out"), prefix=prefix)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and _errors(err) == [f"whisperopt: error: {locked}: permission denied",
                                                     f"whisperopt: error: 1 of 1 input(s) failed: {locked}"]


# --- 3. a manifest line that is not audio ---

def test_manifest_error_names_file_line_and_audio(tmp_path, capsys, audio):
    shutil.copy(audio["a"], tmp_path / "a.flac")
    (tmp_path / "x.txt").write_text("these are notes, not audio\n")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [{"audio": "a.flac", "text": "one", "id": "1"},
                                                               {"audio": "a.flac", "text": "two", "id": "2"},
                                                               {"audio": "x.txt", "text": "three"}]))
    expected = (f"{manifest}:3: cannot decode audio {tmp_path / 'x.txt'}: not an audio file "
                "(Invalid data found when processing input)")
    code = main(["bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32", "--dataset", str(manifest),
                 "--out", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [f"whisperopt: error: {expected}"]
    with pytest.raises(WhisperoptError) as caught:  # any caller that loads the utterance gets the line
        load_manifest(manifest).utterances[2].load()
    assert str(caught.value) == expected
    (tmp_path / "dir.flac").mkdir()
    manifest.write_text(json.dumps({"audio": "dir.flac", "text": "four"}) + "\n")
    with pytest.raises(WhisperoptError, match=f"^{manifest}:1: {tmp_path / 'dir.flac'}: is a directory"):
        load_dataset(str(manifest))


# --- 4. interrupt, resume, overwrite, failed writes ---

@pytest.mark.slow
def test_ctrl_c_then_rerun_continues(tmp_path, audio):
    out = tmp_path / "out"
    argv = [str(audio["a"]), str(audio["long"]), *FAST, "-o", str(out)]
    proc = _spawn(*argv)
    _wait_for(out / "a.tsv", proc)  # the last format of the first input: it is done, the long one has begun
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert _errors(stderr) == ["whisperopt: interrupted: 1 of 2 input(s) done; re-run the same command to continue "
                               "with the rest"]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"a.{f}" for f in ALL)  # nothing of long, no temp file
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    proc = _spawn(*argv)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0 and _errors(stderr) == []
    assert stdout.splitlines()[0] == f"{audio['a']}: {SKIPPED}" and f"{audio['long']}: " in stdout.splitlines()[1]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("a.*")} == first  # untouched
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.{f}" for s in ("a", "long") for f in ALL)


@pytest.mark.slow
def test_partial_outputs_are_redone_and_overwrite_redoes_all(tmp_path, capsys, audio):
    out = tmp_path / "out"
    argv = [str(audio["a"]), *FAST, "-o", str(out), "-f", "txt,srt"]
    code, stdout, err = _cli(capsys, *argv)
    assert code == 0 and err == [] and "10.4 s audio" in stdout
    code, stdout, err = _cli(capsys, *argv)
    assert code == 0 and err == [] and stdout == f"{audio['a']}: {SKIPPED}\n"
    code, stdout, _ = _cli(capsys, *argv[:-1], "txt,srt,vtt")  # a format that is missing: transcribed again
    assert code == 0 and "10.4 s audio" in stdout and (out / "a.vtt").exists()
    (out / "a.srt").unlink()  # killed between two formats: the set is incomplete, so the input is redone
    (out / "a.txt").write_text("stale")
    code, stdout, _ = _cli(capsys, *argv)
    assert code == 0 and "10.4 s audio" in stdout
    assert (out / "a.txt").read_text() != "stale" and (out / "a.srt").read_text().startswith("1\n00:00:00,")
    (out / "a.txt").write_text("stale")
    code, stdout, _ = _cli(capsys, *argv, "--overwrite")
    assert code == 0 and SKIPPED not in stdout and (out / "a.txt").read_text() != "stale"


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs holding a filler file that leaves two 4-KiB pages: room for two small transcript files."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root / CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        (mnt / "filler").write_bytes(b"\0" * (56 << 10))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.slow
def test_full_disk_stops_in_one_line_and_leaves_no_temp_file(tiny_disk, capsys, audio):
    argv = [str(audio["a"]), *FAST, "-o", str(tiny_disk)]
    code, stdout, err = _cli(capsys, *argv)
    assert code == 2 and len(err) == 1 and stdout == ""
    assert err[0].startswith("whisperopt: error: cannot write ") and str(tiny_disk) in err[0]
    assert "no space left on device" in err[0] and err[0].endswith("(0 of 1 input(s) done; re-run to continue)")
    assert _temporary_files(tiny_disk) == []
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["a.srt", "a.txt", "filler"]  # txt and srt fitted
    (tiny_disk / "filler").unlink()  # room again: the incomplete set is redone, not skipped
    code, stdout, err = _cli(capsys, *argv)
    assert code == 0 and err == [] and SKIPPED not in stdout
    assert sorted(p.name for p in tiny_disk.iterdir()) == sorted(f"a.{f}" for f in ALL)


@pytest.mark.slow
def test_output_dir_turning_read_only_stops_in_one_line(tmp_path, audio):
    prefix = _unprivileged()
    out = tmp_path / "out"
    proc = _spawn(str(audio["a"]), str(audio["long"]), *FAST, "-o", str(out), prefix=prefix)
    try:
        _wait_for(out / "a.tsv", proc)
        out.chmod(0o555)  # while the long input is being decoded
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        out.chmod(0o755)
    errors = _errors(stderr)
    assert proc.returncode == 2 and len(errors) == 1, stderr
    assert errors[0].startswith("whisperopt: error: cannot write ") and str(out) in errors[0]
    assert "permission denied" in errors[0] and errors[0].endswith("(1 of 2 input(s) done; re-run to continue)")
    assert _temporary_files(out) == [] and sorted(p.name for p in out.iterdir()) == sorted(f"a.{f}" for f in ALL)
