"""Group S of tools/fault_matrix.py (issue 24): files and flags tried as an attacker would. Classes: path traversal
in data-derived names, output collisions and input overwrite, unbounded inputs, non-finite JSON, malformed results
files, code planted in artifacts, serve's key. It is the matrix's fast form (``--fast``: this group alone, a few
minutes), which tests/test_faults.py runs in CI.

``register(fm)`` adds the cases through the matrix's own helpers (``fm`` is the fault_matrix module)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path


class Planted:
    """A pickle that, when loaded with weights_only=False, creates the file ``marker``: what a crafted export's
    artifact would do with ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _edit(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_rows(path: Path, edit) -> None:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    edit(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json.dumps writes NaN / Infinity bare


def _strict_summary(c):
    text = (c.out / "summary.json").read_text()
    try:
        json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    except ValueError as exc:
        return False, f"summary.json is not strict JSON: {exc}"
    return True, "summary.json strict JSON (non-finite as null)"


def _unchanged(name: str, src: str):
    def check(c):
        same = c.p(name).read_bytes() == Path(src).read_bytes()
        return same, "input intact" if same else f"{name} was overwritten"
    return check


def _untouched(c):
    left = list(c.p("linked-target").iterdir())
    return not left, f"written through the link: {[p.name for p in left]}" if left else "nothing written through it"


def _plant_pickle(c):
    """Build torch-int8-dynamic in the case's cache, replace its state dict by a crafted pickle and re-sign the
    manifest's file table with the pickle's size and sha256 (what a hostile export can do)."""
    r = subprocess.run([*FM.CLI, "build", "--model", "synthetic:tiny", "--recipes", "torch-int8-dynamic"],
                       cwd=c.dir, env=c.env, capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise RuntimeError(f"build torch-int8-dynamic failed: {r.stderr.strip()[-200:]}")
    art = c.art("torch-int8-dynamic")
    target = next(art.glob("*.pt"))
    target.unlink()  # its own inode: the shared cache's copy stays as it was
    target.write_bytes(pickle.dumps(Planted(c.p("PWNED"))))
    data = target.read_bytes()
    _edit(art / "manifest.json", lambda m: m["integrity"].__setitem__(
        target.name, {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))


def _no_marker(c):
    ran = c.p("PWNED").exists()
    return not ran, "the planted pickle RAN (marker created)" if ran else "the planted pickle did not run"


FM = None  # the fault_matrix module, set by register


def register(fm) -> None:
    global FM
    FM = fm
    case, T, R, put, says, seq, all_of, made = fm.case, fm.T, fm.R, fm.put, fm.says, fm.seq, fm.all_of, fm.made
    good = fm.GOOD
    other = fm.SHORT[1]

    # output collisions and input overwrite (transcribe)
    two = seq(put("a/x.flac", src=good), put("b/x.flac", src=other), put("list.txt", "a/x.flac\nb/x.flac\n"))
    case("S", "files-from a/x.flac b/x.flac, re-run", T(extra=("--files-from", "list.txt")), (0,), setup=two,
         more=((None, (0,)),), check=all_of(made("out/a/x.txt", "out/b/x.txt"),
                                            says("skipped", stream="out", run=1)))
    case("S", "input clip.txt, -o .", T("clip.txt", out=".", extra=("-f", "txt", "--overwrite")), (2,),
         setup=put("clip.txt", src=good), check=all_of(says("overwrite"), _unchanged("clip.txt", good)), needs="")
    case("S", "input linked onto another input's transcript", T("a.wav", "song.mp3", extra=("-f", "txt")), (2,),
         needs="", setup=seq(put("a.wav", src=good), put("out/a.txt", src=other),
                             lambda c: c.p("song.mp3").symlink_to(c.p("out", "a.txt"))),
         check=all_of(says("overwrite the input"), _unchanged("out/a.txt", other)))
    case("S", "the same file listed twice", T("a.flac", "./a.flac"), (0,), setup=put("a.flac", src=good),
         check=all_of(made("out/a.txt"), says("listed twice", stream="out")))

    # unbounded inputs
    case("S", "--files-from /dev/zero", T(extra=("--files-from", "/dev/zero")), (2,), needs="", check=says("16 MiB"))
    case("S", "--files-from with a 1 MB line", T(extra=("--files-from", "long.txt")), (2,), needs="",
         setup=put("long.txt", "a" * (1 << 20) + "\n"), check=says("long.txt:1"))
    case("S", "--files-from with a NUL in a path", T(extra=("--files-from", "nul.txt")), (2,), needs="",
         setup=put("nul.txt", "a\0b.wav\n"), check=says("NUL"))

    # path traversal in data-derived names (results folders)
    def evil(name):
        def setup(c):
            fm.results_copy(c)
            c.p("outside").mkdir(exist_ok=True)
            shutil.copy(c.out / "ct2-int8.status.json", c.p("outside", "evil.status.json"))
            _edit(c.out / "run.json", lambda d: d["config"]["recipes"].append(name))
        return setup
    for name in ("../outside/evil", str(Path("/etc/passwd")), ".hidden", "a/b"):
        case("S", f"run.json recipe {name!r}", R(), (2,), needs="results", setup=evil(name),
             check=says("run.json", "not a recipe name"))
    case("S", "status file linked outside the results", R(), (2,), needs="results", check=says("leads outside"),
         setup=seq(fm.results_copy, put("elsewhere.json", "{}"), lambda c: (
             (c.out / "ct2-int8.status.json").unlink(), (c.out / "ct2-int8.status.json").symlink_to(
                 c.p("elsewhere.json")))))

    # malformed results files: exit 2 naming the file
    for title, fname, edit, codes, want in (
            ("status without recipe", "ct2-int8.status.json", lambda d: d.pop("recipe"), (2,), "ct2-int8.status.json"),
            ("status of another recipe", "ct2-int8.status.json", lambda d: d.update(recipe="torch-fp32"), (2,),
             "status of 'torch-fp32'"),
            ("status size_bytes a string", "ct2-int8.status.json", lambda d: d.update(size_bytes="big"), (2,),
             "size_bytes"),
            # a status that is no record at all reads like a torn one: its recipe failed, measured again (README)
            ("status not an object", "ct2-int8.status.json", None, (1,), "ct2-int8.status.json"),
            ("run.json dataset a number", "run.json", lambda d: d["config"].update(dataset=5), (2,), "run.json")):
        how = (lambda c, f=fname, e=edit: _edit(c.out / f, e)) if edit else \
            (lambda c, f=fname: (c.out / f).write_text("[1, 2]"))
        case("S", title, R(), codes, needs="results", setup=seq(fm.results_copy, how), check=says(want))
    for title, edit, want in (("row without latency_s", lambda rows: rows[0].pop("latency_s"), "rows.jsonl:1"),
                              ("row with batch 0", lambda rows: rows[0].update(batch=0), "rows.jsonl:1")):
        case("S", title, R(), (2,), needs="results", check=says(want),
             setup=seq(fm.results_copy, lambda c, e=edit: _edit_rows(c.out / "ct2-int8.rows.jsonl", e)))
    case("S", "segment line without wall_s", R(), (2,), needs="results", check=says("segments.jsonl"),
         setup=seq(fm.results_copy, lambda c: _edit_rows(c.out / "ct2-int8.segments.jsonl",
                                                         lambda rows: rows[0].pop("wall_s"))))

    # non-finite numbers
    def non_finite(rows):
        rows[0]["latency_s"], rows[-1]["duration_s"] = float("nan"), float("inf")
    case("S", "NaN and Infinity in rows", R(), (0, 1), needs="results", check=_strict_summary,
         setup=seq(fm.results_copy, lambda c: _edit_rows(c.out / "ct2-int8.rows.jsonl", non_finite)))

    # a symlinked --out
    case("S", "export --out is a symlink to a folder", lambda c: [
        "export", str(c.out), "--recipe", "ct2-int8", "--out", str(c.p("linked"))], (2,), needs="results",
         setup=seq(fm.results_copy, lambda c: c.p("linked-target").mkdir(),
                   lambda c: c.p("linked").symlink_to(c.p("linked-target"))), check=_untouched)

    # code planted in an artifact (the export loaders read data only)
    case("S", "crafted pickle as torch-int8-dynamic's state dict, transcribe --verify",
         T(good, extra=("--recipe", "torch-int8-dynamic", "--verify")), (0, 2), cache="clone", setup=_plant_pickle,
         check=_no_marker)

    # serve fails closed
    serve = ["serve", "--model", "synthetic:tiny", "--port", "0", "--threads", "1"]
    case("S", "serve --api-key ''", lambda c: [*serve, "--api-key", ""], (2,), needs="", check=says("key"),
         timeout=60)
    case("S", "serve with WHISPEROPT_API_KEY='   '", lambda c: serve, (2,), needs="", check=says("key"), timeout=60,
         setup=lambda c: c.env.__setitem__("WHISPEROPT_API_KEY", "   "))
