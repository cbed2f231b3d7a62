"""Issue 24, exports and artifacts: nothing a file holds runs as code when it is loaded, an export is checked as a
whole (its table's digest, sizes always, sha256 with --verify), and export writes nowhere but --out.

The export comes from a small bench on synthetic:tiny (torch-int8-weight-only: a torchao state dict, the one
artifact format that is a pickle of more than plain tensors). Every hostile copy below is consistent where an
attacker who controls the folder can make it so (manifest, table, digest and card rewritten to match). The tests on
that export are slow (its bench and export take ~2-3 min); the loaders' own reads are checked without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from whisperopt.cli import main
from whisperopt.errors import WhisperoptError
from whisperopt.models.export_record import CARD_DIGEST_LINE, check_export, table_digest

RECIPE = "torch-int8-weight-only"
WEIGHTS = "artifact/model_int8_weight_only.pt"
FAST = ["--temperature-increment-on-fallback", "0", "--max-new-tokens", "3", "--without-timestamps", "-f", "txt"]


class Touch:
    """A pickle that, if anything unpickled it, would create ``path`` (what a crafted checkpoint does)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


class System(Touch):
    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("whisperopt: error: ") and "\n" not in err, err
    return err


def _flac() -> str:
    from whisperopt.data import load_dataset

    return str(load_dataset("librispeech:test-clean").utterances[0].audio)


@pytest.fixture(scope="module")
def bench(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sec") / "results"
    assert main(["bench", "--model", "synthetic:tiny", "--recipes", RECIPE, "--limit", "1", "--threads", "2",
                 "--fidelity-utterances", "0", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def export(bench, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sec-export") / "exported"
    assert main(["export", str(bench), "--recipe", RECIPE, "--out", str(out)]) == 0
    return out


def _reseal(d: Path, changed: list[str]) -> None:
    """Rewrite the artifact manifest, the export's table, its digest and the card to match the files ``changed``:
    all an attacker who controls the folder needs to make a hostile export self-consistent."""
    manifest_file = d / "artifact" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    for rel in changed:
        if rel.startswith("artifact/"):
            manifest["integrity"][rel[len("artifact/"):]] = {"bytes": (d / rel).stat().st_size, "sha256": _sha(d / rel)}
    manifest_file.write_text(json.dumps(manifest, indent=2))
    record = json.loads((d / "whisperopt_export.json").read_text())
    old = record["files_sha256"]
    for rel in [*changed, "artifact/manifest.json"]:
        record["files"][rel] = {"bytes": (d / rel).stat().st_size, "sha256": _sha(d / rel)}
    record["files_sha256"] = table_digest(record["files"])
    (d / "whisperopt_export.json").write_text(json.dumps(record, indent=2))
    card = d / "README.md"
    card.write_text(card.read_text().replace(CARD_DIGEST_LINE.format(old), CARD_DIGEST_LINE.format(record["files_sha256"])))


def _copy(export: Path, tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    shutil.copytree(export, d)
    return d


# --- Deliver 1: no code runs on load ---

@pytest.mark.slow
def test_a_crafted_pickle_in_an_export_runs_nothing(export, tmp_path, capsys):
    """The artifact's .pt replaced by a pickle that would create a marker, manifest, table, digest and card updated
    to match: transcribe --verify, bench and serve refuse it in one line; the marker is never created."""
    marker = tmp_path / "pwned"
    hostile = _copy(export, tmp_path, "hostile")
    import torch

    torch.save({"model.encoder.conv1.weight": Touch(marker)}, hostile / WEIGHTS)
    _reseal(hostile, [WEIGHTS])
    check_export(hostile, json.loads((hostile / "whisperopt_export.json").read_text()), digests=True)  # consistent
    assert main(["transcribe", _flac(), "--model", str(hostile), "--verify", "-o", str(tmp_path / "t"), *FAST]) == 2
    err = _error(capsys)
    assert "is not a data-only state dict" in err and "refused without running it" in err, err
    assert not marker.exists()
    # bench --model EXPORT: the worker's load fails on the same line, and nothing ran
    main(["bench", "--model", str(hostile), "--limit", "1", "--threads", "1", "--out", str(tmp_path / "b")])
    capsys.readouterr()
    status = json.loads((tmp_path / "b" / f"{RECIPE}.status.json").read_text())
    assert status["status"] != "ok" and "not a data-only state dict" in json.dumps(status)
    assert not marker.exists()
    # serve --verify: the load fails before anything is served (a subprocess: a wrong pass would serve forever)
    run = subprocess.run([sys.executable, "-m", "whisperopt.cli", "serve", "--model", str(hostile), "--verify",
                          "--port", "0"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    lines = [x for x in run.stderr.splitlines() if x.startswith("whisperopt: error:")]
    assert run.returncode == 2 and lines and "not a data-only state dict" in lines[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr and not marker.exists()


@pytest.mark.slow
def test_a_crafted_pickle_in_the_cache_runs_nothing(export, tmp_path, capsys):
    """The cached artifact (what build and transcribe load) replaced by a crafted pickle with its manifest
    rewritten: refused in one line, nothing ran; the cache is restored afterwards."""
    from whisperopt.models import resolve_model
    from whisperopt.recipes import get_recipe
    from whisperopt.recipes.artifacts import MANIFEST, artifact_path

    r = get_recipe(RECIPE)
    adir = artifact_path(r, resolve_model("synthetic:tiny").path, r.resolve_options({}))
    weights, manifest_file = adir / Path(WEIGHTS).name, adir / MANIFEST
    saved = {p: p.read_bytes() for p in (weights, manifest_file)}
    marker = tmp_path / "pwned"
    try:
        import torch

        torch.save({"w": System(marker)}, weights)
        manifest = json.loads(saved[manifest_file])
        manifest["integrity"][weights.name] = {"bytes": weights.stat().st_size, "sha256": _sha(weights)}
        manifest_file.write_text(json.dumps(manifest))
        assert main(["transcribe", _flac(), "--model", "synthetic:tiny", "--recipe", RECIPE, "--verify", "-o",
                     str(tmp_path / "t"), *FAST]) == 2
        err = _error(capsys)
        assert "not a data-only state dict (it names posix.system)" in err, err
        assert not marker.exists()
    finally:
        for p, data in saved.items():
            p.write_bytes(data)


def test_loaders_read_data_only(tmp_path):
    """Each loader's own read: torch state dicts, the stored fp32 probe references (.npz), openai-whisper's .pt."""
    import torch

    from whisperopt.recipes.base import Artifact
    from whisperopt.recipes.openai_whisper import WEIGHTS_FILE, OpenAIWhisperRuntime
    from whisperopt.recipes.pytorch import load_state_dict_file
    from whisperopt.recipes.validation import Reference, _load_stored

    marker = tmp_path / "pwned"
    torch.save({"w": Touch(marker)}, tmp_path / "state.pt")
    with pytest.raises(WhisperoptError, match="not a data-only state dict") as exc:
        load_state_dict_file(tmp_path / "state.pt")
    assert "\n" not in str(exc.value)
    evil = np.empty(1, dtype=object)
    evil[0] = Touch(marker)
    np.savez(tmp_path / "probes.npz", **{"enc/x": evil, "top1/x": np.zeros(1)})
    with pytest.raises(ValueError, match="allow_pickle"):
        Reference.load(tmp_path / "probes.npz")
    assert _load_stored(Reference.load, tmp_path / "probes.npz") is None  # recomputed, never unpickled
    (tmp_path / "ow").mkdir()
    torch.save({"dims": System(marker), "model_state_dict": {}}, tmp_path / "ow" / WEIGHTS_FILE)
    recipe = type("R", (), {"name": "openai-whisper"})()
    with pytest.raises(WhisperoptError, match="cannot load"):
        OpenAIWhisperRuntime(recipe, Artifact("openai-whisper", tmp_path / "ow", tmp_path, {}, {}), "cpu", 1)
    assert not marker.exists()


# --- Deliver 2: an export is verified as a whole ---

def _record(d: Path) -> dict:
    return json.loads((d / "whisperopt_export.json").read_text())


@pytest.mark.slow  # the module's bench + export (~2-3 min on 2 shared cores)
def test_every_exported_file_is_in_the_bound_table(export):
    record = _record(export)
    on_disk = {p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file()}
    assert on_disk == set(record["files"]) | {"README.md", "whisperopt_export.json"}
    assert {"config.json", "tokenizer.json", "model.safetensors", WEIGHTS, "artifact/manifest.json"} <= set(record["files"])
    assert record["files_sha256"] == table_digest(record["files"])
    assert CARD_DIGEST_LINE.format(record["files_sha256"]) in (export / "README.md").read_text()
    check_export(export, record, digests=True)


@pytest.mark.slow  # the module's bench + export (~2-3 min on 2 shared cores)
def test_tampering_is_caught_as_documented(export, tmp_path, capsys):
    """Root config edited at the same size: caught by --verify only; a size change: caught on every load; a table
    or card out of step, an unlisted file, a listed path outside the folder: refused on every load."""
    d = _copy(export, tmp_path, "edited")
    config = d / "config.json"
    text = config.read_text()
    config.write_text(text.replace('"gelu"', '"relu"', 1))
    assert config.stat().st_size == len(text.encode()) and '"relu"' in config.read_text()
    check_export(d, _record(d))  # the cheap check cannot see a same-size edit (README: Security)
    assert main(["transcribe", _flac(), "--model", str(d), "--verify", "-o", str(tmp_path / "t"), *FAST]) == 2
    assert "exported file config.json has other bytes than the export wrote (sha256 differs)" in _error(capsys)
    config.write_text(text)

    weights = d / WEIGHTS
    with open(weights, "r+b") as f:  # one byte flipped, same size: --verify only
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    check_export(d, _record(d))
    with pytest.raises(WhisperoptError, match="sha256 differs"):
        check_export(d, _record(d), digests=True)
    with open(weights, "ab") as f:  # one byte more: every load
        f.write(b"\0")
    assert main(["transcribe", _flac(), "--model", str(d), "-o", str(tmp_path / "t"), *FAST]) == 2
    assert f"exported file {WEIGHTS} has" in _error(capsys)

    for name, edit, message in [
        ("table", lambda e: _edit_record(e, lambda r: r["files"]["config.json"].update(bytes=1)),
         "does not match its recorded digest"),
        ("card", lambda e: (e / "README.md").write_text((e / "README.md").read_text().replace("File table", "Table")),
         "does not state the file table's digest"),
        ("extra", lambda e: (e / "pytorch_model.bin").write_bytes(b"x"), "a file its table does not list"),
        ("escape", lambda e: _edit_record(e, lambda r: r["files"].update({"../../.bashrc": r["files"]["config.json"]}),
                                          reseal=True), "lists a file outside the export"),
        ("link", lambda e: (e / "tokenizer.json").unlink() or (e / "tokenizer.json").symlink_to("/etc/hostname"),
         "outside the export"),
    ]:
        e = _copy(export, tmp_path, name)
        edit(e)
        with pytest.raises(WhisperoptError, match=message) as exc:
            check_export(e, _record(e))
        assert "\n" not in str(exc.value)


def _edit_record(d: Path, change, reseal: bool = False) -> None:
    record = _record(d)
    old = record["files_sha256"]
    change(record)
    if reseal:
        record["files_sha256"] = table_digest(record["files"])
        card = d / "README.md"
        card.write_text(card.read_text().replace(CARD_DIGEST_LINE.format(old),
                                                 CARD_DIGEST_LINE.format(record["files_sha256"])))
    (d / "whisperopt_export.json").write_text(json.dumps(record))


# --- Deliver 3: export writes nowhere but --out ---

def _doctor(bench: Path, tmp_path: Path, victim: Path) -> Path:
    """A results folder whose status points at a copy of the cached artifact whose manifest lists
    ``../../<victim>``: what a crafted or shared results folder can say."""
    results = tmp_path / "crafted-results"
    shutil.copytree(bench, results)
    status_file = results / f"{RECIPE}.status.json"
    status = json.loads(status_file.read_text())
    adir = tmp_path / "a" / "b" / "artifact"
    shutil.copytree(status["artifact_dir"], adir)
    manifest = json.loads((adir / "manifest.json").read_text())
    rel = os.path.relpath(victim, adir)
    manifest["integrity"][rel] = {"bytes": victim.stat().st_size, "sha256": _sha(victim)}
    (adir / "manifest.json").write_text(json.dumps(manifest))
    status.update(artifact_dir=str(adir), manifest={**status["manifest"], "integrity": manifest["integrity"]})
    status_file.write_text(json.dumps(status))
    return results


@pytest.mark.slow  # the module's bench + export (~2-3 min on 2 shared cores)
def test_export_paths_from_data_are_confined(bench, export, tmp_path, capsys):
    victim = tmp_path / ".bashrc"
    victim.write_text("user's own file\n")
    out = tmp_path / "a" / "b" / "out"
    results = _doctor(bench, tmp_path, victim)
    assert main(["export", str(results), "--recipe", RECIPE, "--out", str(out)]) == 2
    assert "names a path outside its folder" in _error(capsys)
    assert victim.read_text() == "user's own file\n" and not out.exists()


@pytest.mark.slow  # the module's bench + export (~2-3 min on 2 shared cores)
def test_overwrite_replaces_only_an_earlier_export(bench, export, tmp_path, capsys):
    cases = []
    empty_record = tmp_path / "empty-record"
    empty_record.mkdir()
    (empty_record / "whisperopt_export.json").write_text("")
    (empty_record / "thesis.tex").write_text("mine")
    cases.append((empty_record, "is empty or not JSON"))
    listless = tmp_path / "listless"
    listless.mkdir()
    (listless / "whisperopt_export.json").write_text(json.dumps({"recipe": RECIPE, "files": {}}))
    (listless / "thesis.tex").write_text("mine")
    cases.append((listless, "holds no valid list"))
    added = _copy(export, tmp_path, "added")
    (added / "artifact" / "notes.txt").write_text("mine")
    cases.append((added, "1 file(s) the earlier export did not write (artifact/notes.txt)"))
    for out, message in cases:
        before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
        assert main(["export", str(bench), "--recipe", RECIPE, "--out", str(out), "--overwrite"]) == 2
        err = _error(capsys)
        assert "not a whisperopt export" in err and message in err, err
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    # nesting either way: results inside --out (replacing --out would delete them), --out inside results
    outer = _copy(export, tmp_path, "outer")
    shutil.copytree(bench, outer / "results")
    assert main(["export", str(outer / "results"), "--recipe", RECIPE, "--out", str(outer), "--overwrite"]) == 2
    assert "is inside --out" in _error(capsys) and (outer / "results" / "summary.json").is_file()
    assert main(["export", str(bench), "--recipe", RECIPE, "--out", str(bench / "x")]) == 2
    assert "inside the results directory" in _error(capsys)
    # an intact earlier export is replaced
    again = _copy(export, tmp_path, "again")
    assert main(["export", str(bench), "--recipe", RECIPE, "--out", str(again), "--overwrite"]) == 0
    check_export(again, _record(again), digests=True)
