#!/usr/bin/env python3
"""Fault matrix for the whisperopt CLI (issue 12): try the tool as a new user and as a fault injector would.

Every case runs the real CLI in a subprocess (odd and broken audio, bad flags, bad manifests, read-only and full
disks, signals and kill -9, concurrent runs, a damaged cache, damaged results) and is judged by the universal checks
(no traceback, every ``whisperopt: error:`` a single line, exit code as expected, no orphaned bench worker, rows files
valid JSON with no utterance twice and, where the case says so, none missing; no leftover ``*.tmp`` file) plus its
own check. One table row per case, then the totals; exit 0 iff no case failed (n/a cases are counted apart).

    python tools/fault_matrix.py [--fast] [--only SUBSTR[,SUBSTR]] [--list] [--json OUT.json] [--workdir DIR]

Mount cases need root (tmpfs for "disk full", read-only bind mounts). The private cache under the workdir is seeded by
hard-linking $WHISPEROPT_SEED_CACHE/models/synthetic-tiny (default /tmp/wo-testcache); artifacts are built once.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fault_security  # tools/: the matrix's group S

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from whisperopt.cli import main; sys.exit(main())"]
SEED = Path(os.environ.get("WHISPEROPT_SEED_CACHE", "/tmp/wo-testcache"))
LIBRI = REPO.parent / "shared/data/librispeech/LibriSpeech/test-clean"
CMD_TIMEOUT = 300
# the checkout this script lives in is the one under test, whatever an editable install elsewhere points at
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
       "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
# root without the capabilities that bypass file permissions (uid 65534 cannot run an interpreter under /root)
NOBODY = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
TR = ["--model", "synthetic:tiny", "--max-new-tokens", "16", "--beam-size", "1", "--best-of", "1",
      "--temperature-increment-on-fallback", "0", "--language", "en", "--threads", "1"]
BN = ["--model", "synthetic:tiny", "--warmup", "0", "--fidelity-utterances", "0", "--threads", "1"]
NOISE = re.compile(r"^(Failed to load /|[WI]\d{4} |\s*warnings\.warn|.*(User|Future|Deprecation)Warning)")
TMP_NAME = re.compile(r"\.tmp(\.|$)")

FLACS = sorted(LIBRI.rglob("*.flac"))
IDS = [p.stem for p in FLACS]  # a LibriSpeech directory is read sorted by utterance id


def _shortest(n: int) -> list[str]:
    import soundfile as sf

    return [str(p) for p in sorted(FLACS, key=lambda p: sf.info(str(p)).duration)[:n]]


SHORT = _shortest(6) if FLACS else ["/nonexistent.flac"] * 6
GOOD = SHORT[0]


def _ctrl_c_works() -> None:
    """A child's SIGINT back to the default: started from a shell without job control (``... &``), this script and
    its children would inherit SIGINT ignored, and the Ctrl-C cases would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class NotApplicable(Exception):
    """The case cannot run here (say why); counted apart, never as passed."""


@dataclass
class Run:
    label: str
    argv: list
    expect: tuple
    rc: int | None = None
    out: str = ""
    err: str = ""
    timed_out: bool = False


@dataclass
class Case:
    name: str
    group: str
    argv: Callable  # ctx -> CLI arguments
    expect: tuple = (2,)
    setup: Callable | None = None  # ctx -> None (files, mounts, damage)
    during: tuple = ()  # (trigger(ctx) -> bool, action(ctx, proc) -> bool: False if it could not act)
    between: Callable | None = None  # ctx -> None, after the main run, before the follow-ups
    more: tuple = ()  # follow-up commands: (argv fn or None for the same argv, expected codes)
    ids: Callable | None = None  # ctx -> {rows file: utterance ids it must hold exactly, after the last run}
    check: Callable | None = None  # ctx -> (ok, note)
    cache: str = "shared"  # shared | clone (hard-linked copy of the built cache) | models (models only) | own
    needs: str = "build"  # "" | build | results
    quiet: bool = False  # wrong-but-quiet candidate: its note says what the tool does now
    stdin: Callable | None = None  # ctx -> path piped to stdin
    wrap: list | None = None  # command prefix (setpriv)
    closed_stdout: bool = False  # stdout is a pipe nobody reads (`| head` that already exited)
    timeout: float = CMD_TIMEOUT  # seconds a command of this case may run


class Ctx:
    def __init__(self, h: Harness, case: Case):
        self.h, self.case = h, case
        self.dir = h.work / "cases" / re.sub(r"[^\w.-]+", "-", case.name).strip("-")
        self.out = self.dir / "res"
        self.runs: list[Run] = []
        self.procs: list[subprocess.Popen] = []
        self.unfired: list[str] = []
        self.last_fired: float | None = None
        self.orphans = 0
        self.cache = h.cache
        self.env = {**ENV, "WHISPEROPT_CACHE": str(h.cache), "TMPDIR": str(self.dir / "tmp"),
                    "WO_FAULT_CASE": str(self.dir)}

    def p(self, *parts) -> Path:
        return self.dir.joinpath(*parts)

    def use_cache(self, path: Path) -> None:
        self.cache = Path(path)
        self.env["WHISPEROPT_CACHE"] = str(path)

    def art(self, recipe: str) -> Path:
        return next((self.cache / "artifacts").glob(f"synthetic-tiny-*/{recipe}"))


# ---------------------------------------------------------------- file, mount and process helpers

def clone_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` under ``dst`` (copy where a link is impossible)."""
    for root, _, files in os.walk(src):
        target = dst / Path(root).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            try:
                os.link(Path(root, f), target / f)
            except OSError:
                shutil.copy2(Path(root, f), target / f)


def unshare(path: Path) -> Path:
    """Give ``path`` its own inode, so damaging it leaves the hard-linked originals alone."""
    tmp = path.with_name(path.name + ".unshare")
    shutil.copy2(path, tmp)
    os.replace(tmp, path)
    return path


def truncate(path: Path, keep: float = 0.5, minus: int = 0) -> None:
    """Cut ``path`` to ``keep`` of its size less ``minus`` bytes (its own inode first)."""
    n = unshare(path).stat().st_size
    os.truncate(path, max(0, int(n * keep) - minus))


def flip_byte(path: Path) -> None:
    st = unshare(path).stat()
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        b = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def sh(*cmd) -> None:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode:
        raise NotApplicable(f"`{' '.join(map(str, cmd))}` failed: {r.stderr.strip()[:120]}")


def tmpfs(c: Ctx, d: Path, size: str = "256k") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d)
    return d


def ro_mount(c: Ctx, src: Path, dst: Path) -> Path:
    for d in (src, dst):
        d.mkdir(parents=True, exist_ok=True)
    sh("mount", "--bind", src, dst)
    sh("mount", "-o", "remount,ro,bind", dst)
    return dst


def fill(d: Path) -> None:
    """Write 4 KiB chunks, unbuffered, until the file system is full."""
    fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def worker_pids(c: Ctx, mode: str | None = None) -> list[int]:
    """Bench workers started for this case (cmdline names the worker; the case dir is in TMPDIR and WO_FAULT_CASE)."""
    tag = str(c.dir).encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            if b"whisperopt.bench.worker" not in cmd or (mode and f"\0{mode}\0".encode() not in cmd):
                continue
            env = Path(f"/proc/{d}/environ").read_bytes()
        except OSError:
            continue
        if tag + b"/" in cmd or b"WO_FAULT_CASE=" + tag + b"\0" in env:
            pids.append(int(d))
    return pids


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []


# ---------------------------------------------------------------- triggers and actions (run while a command runs)

def after(secs: float):
    return lambda c, t: t >= secs


def first_row(n: int = 1):
    return lambda c, t: any(sum(1 for x in lines(p) if x.strip()) >= n for p in c.out.glob("*.rows.jsonl"))


def first_output(ext: str = "json", sub: str = "out"):
    return lambda c, t: any(c.p(sub).glob(f"*.{ext}"))


def send(sig: int, group: bool = False):
    def act(c, proc):
        (os.killpg if group else os.kill)(proc.pid, sig)
        return True
    return act


def kill_worker(c, proc):
    pids = worker_pids(c, "run")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return bool(pids)


def concurrent(argv: Callable | None = None, expect: tuple = (2,)):
    def act(c, proc):
        c.h.run_cli(c, (argv or c.case.argv)(c), expect, "concurrent")
        return True
    return act


def fill_at(sub: str):
    return lambda c, proc: (fill(c.p(sub)), True)[1]


# ---------------------------------------------------------------- argv factories and checks

def T(*inputs: str, extra: tuple = (), out: str = "out"):
    """transcribe; an input is absolute, "-", or relative to the case dir."""
    return lambda c: ["transcribe", *[i if i == "-" or i.startswith("/") else str(c.p(i)) for i in inputs],
                      *TR, "-o", str(c.p(out)), *extra]


def B(recipes: str = "ct2-int8", limit: int = 2, extra: tuple = (), dataset: str | None = None):
    def argv(c):
        ds = ["--dataset", dataset if dataset.startswith("librispeech:") else str(c.p(dataset))] if dataset else []
        return ["bench", *BN, "--recipes", recipes, "--limit", str(limit), "--out", str(c.out), *ds, *extra]
    return argv


def R(*extra: str, target: str = "res"):
    return lambda c: ["report", target if target.startswith("/") else str(c.p(target)), *extra]


def BUILD(recipes: str = "ct2-int8", *extra: str):
    return lambda c: ["build", "--model", "synthetic:tiny", "--recipes", recipes, *extra]


def every(recipes: str, n: int):
    return lambda c: {c.out / f"{r}.rows.jsonl": IDS[:n] for r in recipes.split(",")}


def says(*subs: str, stream: str = "err", run: int = 0):
    def check(c):
        r = c.runs[run]
        text = (r.err if stream == "err" else r.out if stream == "out" else r.out + r.err).lower()
        missing = [s for s in subs if s.lower() not in text]
        return not missing, f"{r.label} {stream} lacks {missing}" if missing else ""
    return check


def made(*names: str):
    def check(c):
        missing = [n for n in names if not c.p(n).exists()]
        return not missing, f"missing outputs {missing}" if missing else ""
    return check


def absent(*names: str):
    def check(c):
        there = [n for n in names if c.p(n).exists()]
        return not there, f"unexpected outputs {there}" if there else ""
    return check


def nothing_written(c):
    found = [p.name for p in (*c.p("out").glob("*.txt"), *c.out.glob("*.rows.jsonl"))]
    return not found, f"work done despite the refusal: {found}" if found else "refused before any work"


def all_of(*checks):
    def check(c):
        notes, ok = [], True
        for fn in checks:
            good, note = fn(c)
            ok &= good
            notes.append(note) if note else None
        return ok, "; ".join(notes)
    return check


def detected(c):
    text = "\n".join(r.out + r.err for r in c.runs)
    hit = next((x.strip() for x in text.splitlines() if "damaged" in x or "rebuil" in x), None)
    return True, f"detected: {hit[:100]}" if hit else "NOT detected: no 'damaged'/'rebuild' line, the run went on"


def txt_of(name: str):
    def check(c):
        p = c.p("out", name)
        if not p.exists():
            return False, f"no {name}"
        text = p.read_text(errors="replace").strip()
        return True, f"{name}: {len(text)} chars" + (f" {text[:40]!r}" if text else " (empty transcript)")
    return check


def rel(c: Ctx, text: str) -> str:
    return text.replace(f"{c.dir}/", "").replace(str(c.h.work), "$WORK")


def rc_note(c):
    """What the main run did, in one line: its error, else its skip/fail/warn line."""
    r = c.runs[0]
    line = first_error(r) or next((x.strip() for x in r.out.splitlines() if re.match(r"\s*(skip|fail|warn)", x)),
                                  "no error or skip line")
    return True, rel(c, line)[:120]


# ---------------------------------------------------------------- setups

def wav(path: Path, seconds: float, sr: int = 16000, channels: int = 1, silent: bool = False, amp: float = 0.2):
    import numpy as np
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    x = np.zeros_like(t) if silent else amp * np.sin(2 * np.pi * 300 * t) * (1 + 0.5 * np.sin(7 * t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.stack([x] * channels, axis=1).astype("float32"), sr,
             subtype="FLOAT" if amp > 1 else "PCM_16")


def encode(path: Path, fmt: str, acodec: str | None, rate: int, seconds: float, video: str | None = None):
    """A file through PyAV: a sine audio track and/or a black 64x64 video track."""
    import av
    import numpy as np

    def mux(stream, frames):
        for fr in [*frames, None]:
            for pkt in stream.encode(fr):
                out.mux(pkt)

    pcm = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as out:
        if video:
            vs = out.add_stream(video, rate=10)
            vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        if acodec:
            a = out.add_stream(acodec, rate=rate)
            a.layout, fs = "mono", a.codec_context.frame_size or 1024
            frames = [av.AudioFrame.from_ndarray(pcm[i:i + fs].reshape(1, -1), format="fltp", layout="mono")
                      for i in range(0, len(pcm), fs)]
            for i, fr in enumerate(frames):
                fr.sample_rate, fr.pts = rate, i * fs
            mux(a, frames)
        if video:
            frames = [av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
                      for _ in range(int(seconds * 10))]
            for k, fr in enumerate(frames):
                fr.pts = k
            mux(vs, frames)


def put(name: str, data: bytes | str | None = None, src: str | None = None, nbytes: int | None = None):
    """Setup writing one file in the case dir: bytes/text, or a copy of ``src`` (its first ``nbytes``)."""
    def setup(c):
        p = c.p(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        if src:
            p.write_bytes(Path(src).read_bytes()[:nbytes])
        else:
            p.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def manifest(*records, raw: bytes | None = None, name: str = "m.jsonl"):
    """A manifest in the case dir; records are dicts (or raw strings) one per line; "A"/"B" mean real flacs."""
    def setup(c):
        c.p("a").mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(SHORT[:2]):
            shutil.copy(f, c.p("a", "AB"[i] + ".flac"))
        body = raw if raw is not None else "".join(
            (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
        c.p(name).write_bytes(body)
    return setup


def seq(*fns):
    return lambda c: [fn(c) for fn in fns]


def results_copy(c):
    shutil.copytree(c.h.work / "base-results", c.out)


def drop_priv_ok(c: Ctx) -> str | None:
    """None if the CLI runs as nobody from the case dir, else why not."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return "not root or no setpriv"
    r = subprocess.run([*NOBODY, *CLI, "--version"], cwd=c.dir, env=c.env, capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1][:80]


def unreadable_setup(c):
    why = drop_priv_ok(c)
    if why:
        raise NotApplicable(f"root reads everything; cannot drop privileges to run the interpreter ({why})")
    put("locked.flac", src=GOOD)(c)
    os.chmod(c.p("locked.flac"), 0)
    c.p("out").mkdir(parents=True, exist_ok=True)
    os.chmod(c.p("out"), 0o777)


def full_cache(c):
    """A cache on a full tmpfs whose models/ links to the built cache's models (so only new writes need space)."""
    d = tmpfs(c, c.p("fullcache"))
    (d / "models").symlink_to(c.h.cache / "models")
    fill(d)
    c.use_cache(d)


def ro_cache(models_only: bool = False):
    def setup(c):
        src = c.p("cache-src")
        clone_tree(c.h.cache / "models", src / "models") if models_only else clone_tree(c.h.cache, src)
        c.use_cache(ro_mount(c, src, c.p("rocache")))
    return setup


def damage(recipe: str, rel: str, how: Callable):
    return lambda c: how(c.art(recipe) / rel)


def own_refs(c: Ctx) -> list[Path]:
    """Reference .npz files the case's cache made itself (their key holds the model dir's path, so a clone at
    another path makes its own)."""
    base = {p.name for p in c.h.cache.glob("artifacts/*/references/*.npz")}
    return [p for p in c.cache.glob("artifacts/*/references/*.npz") if p.name not in base]


def truncate_refs(c):
    if not own_refs(c):
        raise RuntimeError("the first build made no references/*.npz to damage")
    for p in own_refs(c):
        truncate(p)


def refs_load(c):
    import numpy as np

    bad = []
    for p in own_refs(c):
        try:
            with np.load(p) as z:
                [z[k] for k in z.files]
        except Exception as exc:  # noqa: BLE001
            bad.append(f"{p.name}: {type(exc).__name__}")
    return not bad, f"references still torn: {bad}" if bad else "references recomputed"


def no_temp_artifacts(c):
    left = [p.name for p in (c.cache / "artifacts").glob("synthetic-tiny-*/.*") if p.is_dir()]
    return not left, f"half-built artifact dirs left: {left}" if left else ""


def outputs_valid(c):
    bad = [p.name for p in c.p("out").glob("*.json") if jload(p.read_text()) is None]
    return not bad, f"broken outputs {bad}" if bad else ""


def jload(text: str):
    """The JSON value of ``text``, or None if it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def first_error(r: Run) -> str:
    errs = [x for x in r.err.splitlines() if x.strip() and not NOISE.match(x)]
    if "Traceback" in r.err:
        return errs[-1]  # the exception itself
    return next((x for x in errs if "error" in x.lower() or "interrupted" in x.lower()), errs[0] if errs and r.rc else "")


# ---------------------------------------------------------------- the matrix

G = Path(GOOD).stem
CASES: list[Case] = []


def case(group: str, title: str, argv: Callable, expect: tuple = (2,), **kw) -> None:
    CASES.append(Case(f"{group}/{title}", group, argv, tuple(expect), **kw))


def audio(title: str, name: str, setup: Callable | None, expect: tuple = (0,), check=None, quiet: bool = False,
          **kw) -> None:
    """An odd input next to a good one: the good one is always transcribed; the odd one per ``expect``."""
    own = made(f"out/{Path(name).stem}.txt") if expect == (0,) else says(Path(name).name)
    case("A", title, T(name, GOOD), expect, setup=setup, check=all_of(made(f"out/{G}.txt"), check or own),
         quiet=quiet, **kw)


def later(secs: float):
    return lambda c, t: c.last_fired is not None and time.time() - c.last_fired >= secs


def mkdir(name: str):
    return lambda c: c.p(name).mkdir(parents=True, exist_ok=True)


# A. audio inputs to transcribe
case("A", "two real flacs (control)", T(GOOD, SHORT[1]), (0,), check=made(f"out/{G}.txt", f"out/{Path(SHORT[1]).stem}.txt"))
audio("0.1 s clip", "clip.wav", lambda c: wav(c.p("clip.wav"), 0.1), check=txt_of("clip.txt"), quiet=True)
audio("30 s of silence", "silence.wav", lambda c: wav(c.p("silence.wav"), 30, silent=True),
      check=txt_of("silence.txt"), quiet=True)
audio("8 kHz stereo wav", "st8k.wav", lambda c: wav(c.p("st8k.wav"), 3, sr=8000, channels=2))
audio("48 kHz float wav beyond +-1", "loud.wav", lambda c: wav(c.p("loud.wav"), 3, sr=48000, amp=3.0),
      check=txt_of("loud.txt"), quiet=True)
audio("mp3", "clip.mp3", lambda c: encode(c.p("clip.mp3"), "mp3", "libmp3lame", 16000, 3))
audio("opus in ogg", "clip.opus", lambda c: encode(c.p("clip.opus"), "ogg", "libopus", 48000, 3))
audio("mp4 video with aac track", "movie.mp4", lambda c: encode(c.p("movie.mp4"), "mp4", "aac", 44100, 3, "mpeg4"))
audio("mp4 video without audio", "mute.mp4", lambda c: encode(c.p("mute.mp4"), "mp4", None, 44100, 2, "mpeg4"), (2,))
audio("zero-byte file", "empty.wav", put("empty.wav", b""), (2,))
audio("text file named .wav", "text.wav", put("text.wav", "hello, this is not audio\n"), (2,))
audio("flac truncated to 3000 bytes", "trunc.flac", put("trunc.flac", src=SHORT[1], nbytes=3000), (0, 2),
      check=rc_note, quiet=True)
audio("a directory", "adir.wav", mkdir("adir.wav"), (2,))
audio("dangling symlink", "dangling.wav", lambda c: c.p("dangling.wav").symlink_to(c.p("nowhere.wav")), (2,))
audio("symlink loop", "loop.wav", lambda c: c.p("loop.wav").symlink_to("loop.wav"), (2,))
audio("missing file", "missing.wav", None, (2,))
audio("named pipe", "fifo.wav", lambda c: os.mkfifo(c.p("fifo.wav")), (2,))
audio("non-ASCII name with spaces", "é ü 文件 name.flac", put("é ü 文件 name.flac", src=SHORT[1]))
case("A", "unreadable file (no DAC override)", T("locked.flac"), (2,), setup=unreadable_setup, wrap=NOBODY,
     check=says("permission denied"))
case("A", "stdin piped (-)", T("-"), (0,), stdin=lambda c: GOOD, check=made("out/stdin.txt"))
case("A", "stdin (-) given twice", T("-", "-"), (2,), stdin=lambda c: GOOD,
     check=all_of(says("once"), absent("out/stdin.txt")))
case("A", "same stem twice (a.mp3 a.opus)", T("a.mp3", "a.opus"), (0,),
     setup=seq(lambda c: encode(c.p("a.mp3"), "mp3", "libmp3lame", 16000, 2),
               lambda c: encode(c.p("a.opus"), "ogg", "libopus", 48000, 2)),
     check=made("out/a.mp3.txt", "out/a.opus.txt"))

# B. bad flags: refused in one line before any work
for flags in (["--beam-size", "0"], ["--beam-size", "100000"], ["--best-of", "0"], ["--threads", "0"],
              ["--threads", "-1"], ["--batch-size", "0"], ["--batch-size", "100000"], ["--max-new-tokens", "0"],
              ["--max-new-tokens", "100000"], ["--temperature", "abc"], ["--language", "xx"],
              ["--output-format", "docx"], ["--recipe", "nope"], ["--model", "nope"], ["--model", "synthetic:huge"],
              ["--option", "nokey"], ["--option", "bogus=1"]):
    case("B", "transcribe " + " ".join(flags), T(GOOD, extra=tuple(flags)), (2,), check=nothing_written, needs="")
case("B", "transcribe -o is a file", T(GOOD, out="afile"), (2,), setup=put("afile", "x"), needs="")
case("B", "transcribe --device cuda (no GPU)", T(GOOD, extra=("--device", "cuda")), (0, 2), check=rc_note,
     quiet=True, needs="")
case("B", "transcribe without inputs", lambda c: ["transcribe", "--model", "synthetic:tiny"], (2,), needs="")
case("B", "no subcommand", lambda c: [], (2,), needs="")
for flags in (["--limit", "0"], ["--limit", "-1"], ["--recipes", ""], ["--recipes", "ct2-int8,ct2-int8"],
              ["--recipes", "nope"], ["--dataset", "nope"], ["--dataset", "librispeech:nope"],
              ["--wer-budget", "-1"], ["--min-agreement", "2"], ["--columns", "nope"], ["--rank-by", "nope"],
              ["--fidelity-utterances", "-1"], ["--threads", "0"], ["--beam-size", "100000"], ["--batch-size", "0"],
              ["--max-new-tokens", "100000"], ["--option", "nokey"], ["--option", "nope:x=1"],
              ["--language", "xx"]):
    case("B", "bench " + " ".join(f"'{f}'" if not f else f for f in flags), B(extra=tuple(flags)), (2,),
         check=nothing_written, needs="")
case("B", "bench --warmup -1", B(extra=("--warmup", "-1")), (0, 2), check=rc_note, quiet=True)
case("B", "bench --device cuda (no GPU)", B(extra=("--device", "cuda")), (0, 2), check=rc_note, quiet=True, needs="")

# C. bench dataset manifests
A_, B_ = {"audio": "a/A.flac", "text": "first"}, {"audio": "a/B.flac", "text": "second"}
case("C", "valid manifest (control)", B(dataset="m.jsonl"), (0,), setup=manifest(A_, B_),
     ids=lambda c: {c.out / "ct2-int8.rows.jsonl": ["A", "B"]})
for title, second, want in (
        ("missing audio file", {"audio": "a/none.flac", "text": "x"}, "m.jsonl:2"),
        ("audio is a directory", {"audio": "a", "text": "x"}, "m.jsonl:2"),
        ("invalid JSON line", '{"audio": "a/B.flac", "text": ', "m.jsonl:2"),
        ("line without text", {"audio": "a/B.flac"}, "m.jsonl:2"),
        ("line not an object", "[1, 2]", "m.jsonl:2"),
        ("duplicate ids", {"audio": "a/B.flac", "text": "x", "id": "A"}, "duplicate")):
    case("C", title, B(dataset="m.jsonl"), (2,), setup=manifest(A_, second), check=says(want))
case("C", "non-audio file (names the line)", B(dataset="m.jsonl"), (2,),
     setup=seq(manifest(A_, {"audio": "a/t.flac", "text": "x"}), put("a/t.flac", "not audio\n")), check=says("m.jsonl:2"))
case("C", "zero-byte audio", B(dataset="m.jsonl"), (2,),
     setup=seq(manifest(A_, {"audio": "a/z.flac", "text": "x"}), put("a/z.flac", b"")), check=says("m.jsonl:2"))
case("C", "truncated flac in manifest", B(dataset="m.jsonl"), (0, 2), check=rc_note, quiet=True,
     setup=seq(manifest(A_, {"audio": "a/t.flac", "text": "x"}), put("a/t.flac", src=SHORT[1], nbytes=3000)))
case("C", "empty manifest", B(dataset="m.jsonl"), (2,), setup=manifest(raw=b""))
case("C", "manifest not UTF-8", B(dataset="m.jsonl"), (2,), setup=manifest(raw=b'{"audio": "a/A.flac", "text": "caf\xe9"}\n'))
case("C", "manifest with UTF-8 BOM", B(dataset="m.jsonl"), (0, 2), check=rc_note, quiet=True,
     setup=manifest(raw=b"\xef\xbb\xbf" + json.dumps(A_).encode() + b"\n"))
case("C", "manifest path missing", B(dataset="none.jsonl"), (2,), needs="")
case("C", "LibriSpeech dir, flac without transcript", B(dataset="ls"), (2,), check=says("without transcript"),
     setup=seq(put("ls/1/2/1-2-0001.flac", src=SHORT[0]), put("ls/1/2/1-2.trans.txt", "1-2-0000 HELLO\n")))
case("C", "empty dataset directory", B(dataset="ls"), (2,), setup=mkdir("ls"))


# D. disks
def filled(sub: str, size: str = "256k"):
    return lambda c: fill(tmpfs(c, c.p(sub), size))


def free(sub: str):
    return lambda c: c.p(sub, "filler").unlink()


case("D", "transcribe -o on a read-only mount", T(GOOD), (2,), setup=lambda c: ro_mount(c, c.p("src"), c.p("out")),
     check=says("read-only"))
case("D", "bench --out on a read-only mount", B(), (2,), setup=lambda c: ro_mount(c, c.p("src"), c.out),
     check=says("read-only"))
case("D", "bench results on a full disk", B(), (2,), setup=filled("res"), check=says("no space"))
case("D", "bench results disk fills mid-run", B(limit=6), (1, 2), setup=lambda c: tmpfs(c, c.out, "4m"),
     during=((first_row(), fill_at("res")),), between=free("res"), more=((None, (0,)),), ids=every("ct2-int8", 6))
case("D", "transcribe output dir full", T(GOOD), (2,), setup=filled("out"), check=says("no space"))
case("D", "transcribe output dir fills mid-run", T(*SHORT[:4]), (2,), setup=lambda c: tmpfs(c, c.p("out"), "1m"),
     during=((first_output(), fill_at("out")),), between=free("out"), more=((None, (0,)),),
     check=all_of(made(*[f"out/{Path(f).stem}.txt" for f in SHORT[:4]]), says("skipped", stream="out", run=1)))
for title, argv in (("bench", B()), ("transcribe", T(GOOD)), ("build", BUILD())):
    case("D", f"cache uncreatable (/proc), {title}", argv, (2,), cache="own", needs="",
         setup=lambda c: c.use_cache(Path("/proc/wo-cache")), check=says("WHISPEROPT_CACHE"))
case("D", "read-only cache with artifacts, bench", B(), (0,), cache="own", setup=ro_cache(), ids=every("ct2-int8", 2))
case("D", "read-only cache with artifacts, transcribe", T(GOOD, extra=("--recipe", "ct2-int8")), (0,), cache="own",
     setup=ro_cache(), check=made(f"out/{G}.txt"))
case("D", "read-only cache without artifacts, bench", B(), (1, 2), cache="own", setup=ro_cache(True),
     check=says("read-only", stream="all"))
case("D", "read-only cache without artifacts, transcribe", T(GOOD, extra=("--recipe", "ct2-int8")), (2,),
     cache="own", setup=ro_cache(True), check=says("read-only"))
case("D", "cache on a full disk, build", BUILD(), (2,), cache="own", setup=full_cache, check=says("no space"))
case("D", "cache on a full disk, transcribe", T(GOOD, extra=("--recipe", "ct2-int8")), (2,), cache="own",
     setup=full_cache, check=says("no space"))
case("D", "TMPDIR on a full disk, bench", B(), (0, 1, 2), setup=filled("tmp"), check=rc_note, quiet=True)
case("D", "bench --out is a file", B(extra=("--out", "afile")), (2,), setup=put("afile", "x"))

# E. processes
SIG = B(limit=6)
case("E", "two benches on one --out at once", B("torch-fp32", 6), (0,), during=((first_row(), concurrent()),),
     ids=every("torch-fp32", 6), check=says("in use", run=1))
for title, sig, group, codes in (("Ctrl-C (SIGINT to the group)", signal.SIGINT, True, (130,)),
                                 ("SIGINT to the runner", signal.SIGINT, False, (130,)),
                                 ("SIGTERM to the runner", signal.SIGTERM, False, (130, 143)),
                                 ("SIGHUP to the runner", signal.SIGHUP, False, (130, 129))):
    case("E", f"bench {title} after the first row", SIG, codes, during=((first_row(), send(sig, group)),),
         more=((None, (0,)),), ids=every("ct2-int8", 6))
case("E", "bench double Ctrl-C", SIG, (130, -2), more=((None, (0,)),), ids=every("ct2-int8", 6),
     during=((first_row(), send(signal.SIGINT, True)), (later(0.3), send(signal.SIGINT, True))))
case("E", "bench kill -9 of the worker", SIG, (1,), during=((first_row(), kill_worker),), more=((None, (0,)),),
     ids=every("ct2-int8", 6), check=says("failed"))
case("E", "bench kill -9 of the runner", SIG, (-9,), during=((first_row(), send(signal.SIGKILL)),),
     more=((None, (0,)),), ids=every("ct2-int8", 6))
case("E", "torn last row (truncate -s -7), re-run", B(limit=4), (0,), more=((None, (0,)),), ids=every("ct2-int8", 4),
     between=lambda c: truncate(c.out / "ct2-int8.rows.jsonl", 1, 7))
case("E", "stale lock file from a dead bench", B(), (0,), setup=put("res/.whisperopt.lock", "999999\n"),
     ids=every("ct2-int8", 2))
TR5 = [f"out/{Path(f).stem}.txt" for f in SHORT[:5]]
for title, sig, codes in (("Ctrl-C", signal.SIGINT, (130,)), ("SIGTERM", signal.SIGTERM, (130, 143, -15)),
                          ("kill -9", signal.SIGKILL, (-9,))):
    case("E", f"transcribe {title} after the first output, re-run", T(*SHORT[:5]), codes,
         during=((first_output(), send(sig, True)),), more=((None, (0,)),), quiet=sig == signal.SIGTERM,
         check=all_of(made(*TR5), says("skipped", stream="out", run=1), outputs_valid, rc_note))
case("E", "two transcribes into one -o at once", T(*SHORT[:3]), (0,), during=((after(1.0), concurrent(expect=(0,))),),
     check=all_of(made(*TR5[:3]), outputs_valid))


def building(c, t):
    return any((c.cache / "artifacts").glob("*/.ct2-int8-*"))


case("E", "Ctrl-C during build, re-run", BUILD(), (130,), cache="models", during=((building, send(signal.SIGINT, True)),),
     more=((None, (0,)),), check=no_temp_artifacts)
case("E", "kill -9 during build, re-run", BUILD(), (-9,), cache="models", quiet=True, more=((None, (0,)),),
     during=((building, send(signal.SIGKILL, True)),),
     check=lambda c: (True, no_temp_artifacts(c)[1] or "no half-built artifact left"))
case("E", "two builds of one artifact at once", BUILD(), (0,), cache="models",
     during=((after(1.0), concurrent(expect=(0,))),), check=no_temp_artifacts)

# F. corrupted cache (a hard-linked clone of the built cache; damaged files get their own inode first)
HALF = damage("ct2-int8", "model.bin", truncate)
FLIP = damage("ct2-int8", "model.bin", flip_byte)
TCT2 = T(GOOD, extra=("--recipe", "ct2-int8"))
case("F", "model.bin half, build", BUILD(), (0,), cache="clone", setup=HALF, check=says("damaged", stream="all"))
case("F", "model.bin half, transcribe", TCT2, (0,), cache="clone", setup=HALF,
     check=all_of(says("damaged", stream="all"), made(f"out/{G}.txt")))
case("F", "model.bin half, bench", B(), (0,), cache="clone", setup=HALF, ids=every("ct2-int8", 2),
     check=says("damaged", stream="all"))
case("F", "model.bin byte flipped, plain bench", B(), (0,), cache="clone", setup=FLIP, ids=every("ct2-int8", 2),
     check=detected, quiet=True)
case("F", "model.bin byte flipped, bench --verify", B(extra=("--verify",)), (0,), cache="clone", setup=FLIP,
     ids=every("ct2-int8", 2), check=says("damaged", stream="all"))
case("F", "model.bin byte flipped, build", BUILD(), (0,), cache="clone", setup=FLIP, check=says("damaged", stream="all"))
case("F", "model.bin byte flipped, transcribe --verify", T(GOOD, extra=("--recipe", "ct2-int8", "--verify")), (0,),
     cache="clone", setup=FLIP, check=says("damaged", stream="all"))
case("F", "manifest.json truncated, bench", B(), (0,), cache="clone", setup=damage("ct2-int8", "manifest.json", truncate),
     ids=every("ct2-int8", 2), check=says("damaged", stream="all"))
case("F", "vocabulary.json deleted, transcribe", TCT2, (0,), cache="clone",
     setup=damage("ct2-int8", "vocabulary.json", Path.unlink), check=says("missing", stream="all"))
case("F", "whisperopt_synthetic.json emptied, transcribe", T(GOOD), (0,), cache="clone", quiet=True,
     setup=lambda c: truncate(c.cache / "models/synthetic-tiny/whisperopt_synthetic.json", 0),
     check=lambda c: (True, "marker " + ("rewritten (model remade)" if c.cache.joinpath(
         "models/synthetic-tiny/whisperopt_synthetic.json").stat().st_size else "still empty")))
case("F", "references/*.npz truncated, build --rebuild", BUILD("ct2-int8", "--rebuild"), (0,), cache="clone",
     between=truncate_refs, more=((None, (0,)),), check=refs_load)
def weights_note(c):
    size = (c.cache / "models/synthetic-tiny/model.safetensors").stat().st_size
    full = (c.h.cache / "models/synthetic-tiny/model.safetensors").stat().st_size
    return True, f"{rc_note(c)[1] or 'no error'}; weights {'remade' if size == full else f'still {size} bytes'}"


case("F", "source model.safetensors truncated, transcribe", T(GOOD), (0, 2), cache="clone", quiet=True,
     check=weights_note, setup=lambda c: truncate(c.cache / "models/synthetic-tiny/model.safetensors"))


def ro_damaged(c):
    clone_tree(c.h.cache, c.p("cache-src"))
    truncate(next(c.p("cache-src", "artifacts").glob("synthetic-tiny-*/ct2-int8")) / "model.bin")
    c.use_cache(ro_mount(c, c.p("cache-src"), c.p("rocache")))


case("F", "damaged artifact in a read-only cache", TCT2, (2,), cache="own", setup=ro_damaged, check=says("--rebuild"))

# G. report on damaged results
RES = {"needs": "results", "setup": results_copy}
case("G", "report (control)", R(), (0,), **RES)
case("G", "report --format csv", R("--format", "csv"), (0,), check=says("recipe", stream="out"), **RES)
case("G", "report --columns all", R("--columns", "all"), (0,), **RES)
case("G", "report --wer-budget -1", R("--wer-budget", "-1"), (2,), **RES)
for title, fname, how, codes, want in (("run.json truncated", "run.json", truncate, (2,), "run.json"),
                                     ("status file truncated", "ct2-int8.status.json", truncate, (1,), "damaged"),
                                     ("environment.json empty", "environment.json", lambda p: truncate(p, 0), (2,),
                                      "environment.json"),
                                     ("summary.json truncated", "summary.json", truncate, (0,), "")):
    case("G", title, R(), codes, needs="results", setup=seq(results_copy, lambda c, f=fname, how=how: how(c.out / f)),
         check=says(want) if want else None)
case("G", "run.json deleted", R(), (0, 2), needs="results", quiet=True, check=rc_note,
     setup=seq(results_copy, lambda c: (c.out / "run.json").unlink()))
case("G", "results dir missing", R(target="nothere"), (2,), needs="")
case("G", "an empty dir", R(target="empty"), (2,), needs="", setup=mkdir("empty"))
case("G", "a file, not a dir", R(target="afile"), (2,), needs="", setup=put("afile", "x"))
case("G", "report on a read-only results dir", R(), (0, 2), needs="results", quiet=True, check=rc_note,
     setup=lambda c: (results_copy(c), shutil.move(c.out, c.p("src")), ro_mount(c, c.p("src"), c.out)))
case("G", "report with stdout closed (| head)", R("--format", "csv"), (0, 1, 2, 120, 141), closed_stdout=True, **RES)


# S. security (issue 24): traversal in data-derived names, output collisions, unbounded inputs, non-finite JSON,
# malformed results files, code planted in artifacts, serve's key; tools/fault_security.py, the fast form (--fast)
fault_security.register(sys.modules[__name__])
FAST = ("S",)


# ---------------------------------------------------------------- the harness

def unmount_under(path: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m == str(path) or m.startswith(f"{path}/")), reverse=True):
        if subprocess.run(["umount", m], capture_output=True).returncode:
            subprocess.run(["umount", "-l", m], capture_output=True)


def tmp_files(root: Path) -> set[str]:
    found = set()
    for d, dirs, files in os.walk(root):
        found.update(os.path.join(d, n) for n in files + dirs if TMP_NAME.search(n))
    return found


def multiline_errors(text: str) -> int:
    """``whisperopt: error:`` lines followed by a continuation (indented, or a line with no "label:" in it)."""
    rows = [x for x in text.splitlines() if not NOISE.match(x)]
    bad = 0
    for i, line in enumerate(rows[:-1]):
        nxt = rows[i + 1]
        if "whisperopt: error:" in line and nxt.strip() and (nxt[0].isspace() or ":" not in nxt):
            bad += 1
    return bad


class Harness:
    def __init__(self, work: Path):
        self.work = work
        self.cache = work / "cache"
        self._ready: dict[str, str | None] = {}  # build/results -> None (ready) or why not

    def prepare(self) -> None:
        seed, mine = SEED / "models/synthetic-tiny", self.cache / "models/synthetic-tiny"
        if seed.is_dir() and not mine.exists():
            clone_tree(seed, mine)
        (self.work / "cases").mkdir(parents=True, exist_ok=True)

    def _setup_cmd(self, argv: list[str]) -> str | None:
        r = subprocess.run([*CLI, *argv], cwd=self.work, env={**ENV, "WHISPEROPT_CACHE": str(self.cache)}, capture_output=True, text=True, timeout=900)
        if r.returncode == 0:
            return None
        tail = [x for x in r.stderr.splitlines() if x.strip() and not NOISE.match(x)]
        return f"`whisperopt {' '.join(argv[:1])}` rc {r.returncode}: {(tail or ['?'])[-1][:100]}"

    def ensure(self, what: str) -> str | None:
        if what not in self._ready:
            t0 = time.time()
            if what == "build":
                self._ready[what] = self._setup_cmd(BUILD("torch-fp32,ct2-int8")(None))
            else:
                why = self.ensure("build")
                shutil.rmtree(self.work / "base-results", ignore_errors=True)
                self._ready[what] = why or self._setup_cmd(
                    ["bench", *BN, "--recipes", "torch-fp32,ct2-int8", "--limit", "2", "--out",
                     str(self.work / "base-results")])
            print(f"  (setup: {what} {'ready' if not self._ready[what] else 'FAILED'} in {time.time() - t0:.0f} s)",
                  flush=True)
        return self._ready[what]

    def run_cli(self, c: Ctx, argv: list[str], expect: tuple, label: str, during: tuple = ()) -> Run:
        r = Run(label, argv, tuple(expect))
        c.runs.append(r)
        i = len(c.runs) - 1
        outp, errp = c.p(f"{i}-{label}.stdout"), c.p(f"{i}-{label}.stderr")
        stdin = open(c.case.stdin(c), "rb") if c.case.stdin else subprocess.DEVNULL
        pipe = os.pipe() if c.case.closed_stdout else None
        if pipe:
            os.close(pipe[0])  # the reader (`head`) has already gone
        with open(outp, "w") as fo, open(errp, "w") as fe:
            proc = subprocess.Popen([*(c.case.wrap or []), *CLI, *argv], cwd=c.dir, env=c.env, stdin=stdin,
                                    stdout=pipe[1] if pipe else fo, stderr=fe, start_new_session=True,
                                    preexec_fn=_ctrl_c_works)
            c.procs.append(proc)
            if pipe:
                os.close(pipe[1])
            pending, t0 = list(during), time.time()
            while proc.poll() is None:
                t = time.time() - t0
                for item in list(pending):
                    if item[0](c, t):
                        pending.remove(item)
                        if not item[1](c, proc):
                            c.unfired.append(f"{label}: the fault found nothing to act on")
                        c.last_fired = time.time()
                if t > c.case.timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    r.timed_out = True
                time.sleep(0.05)
        if stdin is not subprocess.DEVNULL:
            stdin.close()
        r.rc, r.out, r.err = proc.returncode, outp.read_text(errors="replace"), errp.read_text(errors="replace")
        c.unfired += [f"{label}: fault not injected (the command ended first)" for _ in pending]
        if label != "concurrent":
            c.orphans += self.reap(c)
        return r

    def reap(self, c: Ctx) -> int:
        """Workers of this case still alive 10 s after its command ended: counted, then killed."""
        deadline = time.time() + 10
        while (pids := worker_pids(c)) and time.time() < deadline:
            time.sleep(0.25)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return len(pids)

    def run_case(self, case: Case) -> dict:
        c = Ctx(self, case)
        unmount_under(c.dir)
        shutil.rmtree(c.dir, ignore_errors=True)
        c.p("tmp").mkdir(parents=True)
        res = {"name": case.name, "group": case.group, "verdict": "FAIL", "rc": [], "first_error": "", "note": "",
               "problems": [], "tracebacks": 0, "lost": 0, "doubled": 0, "orphans": 0, "tmp_files": 0,
               "quiet": case.quiet}
        shared_before = tmp_files(self.cache)
        t0 = time.time()
        try:
            why = self.ensure(case.needs) if case.needs else None
            if why:
                raise RuntimeError(f"setup failed: {why}")
            if case.cache in ("clone", "models"):
                clone_tree(self.cache / ("" if case.cache == "clone" else "models"),
                           c.p("cache", *(() if case.cache == "clone" else ("models",))))
                c.use_cache(c.p("cache"))
            if case.setup:
                case.setup(c)
            self.run_cli(c, case.argv(c), case.expect, "run", case.during)
            if case.between:
                case.between(c)
            for argv, expect in case.more:
                self.run_cli(c, (argv or case.argv)(c), expect, "rerun")
            self.judge(c, res, shared_before)
        except NotApplicable as exc:
            res.update(verdict="n/a", note=str(exc))
        except Exception as exc:  # noqa: BLE001 - a harness problem fails the case, it is not the tool's traceback
            res["problems"].append(f"harness: {type(exc).__name__}: {exc}")
        finally:
            for proc in c.procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            unmount_under(c.dir)
        res["secs"] = round(time.time() - t0, 1)
        res["rc"] = [r.rc for r in c.runs]
        res["commands"] = [f"{r.label}: whisperopt {' '.join(r.argv)}" for r in c.runs]
        if c.runs:
            res["first_error"] = rel(c, first_error(c.runs[0]))
        return res

    def judge(self, c: Ctx, res: dict, shared_before: set[str]) -> None:
        probs = res["problems"]
        for r in c.runs:
            if r.timed_out:
                probs.append(f"{r.label} timed out after {c.case.timeout:g} s")
            elif r.rc not in r.expect:
                probs.append(f"{r.label}: rc {r.rc}, expected {'/'.join(map(str, r.expect))}")
            if "Traceback" in r.out + r.err or "Exception ignored" in r.err:
                res["tracebacks"] += 1
                probs.append(f"{r.label}: traceback")
            if n := multiline_errors(r.err):
                probs.append(f"{r.label}: {n} error message(s) over several lines")
            if r.rc in (1, 2) and "error" not in r.err.lower():
                probs.append(f"{r.label}: rc {r.rc} without an error line")
        probs += c.unfired
        res["orphans"] = c.orphans
        if c.orphans:
            probs.append(f"{c.orphans} orphaned worker(s)")
        invalid = 0
        for d, _, files in os.walk(c.dir):
            for f in (Path(d) / n for n in files if n.endswith(".rows.jsonl")):
                seen = set()
                for line in filter(str.strip, lines(f)):
                    if not isinstance(row := jload(line), dict):
                        invalid += 1
                        continue
                    res["doubled"] += row.get("id") in seen
                    seen.add(row.get("id"))
        if invalid:
            probs.append(f"{invalid} invalid row line(s)")
        if res["doubled"]:
            probs.append(f"{res['doubled']} row(s) doubled")
        for path, ids in (c.case.ids(c) if c.case.ids else {}).items():
            have = {row.get("id") for x in lines(path) if isinstance(row := jload(x), dict)}
            lost, extra = sorted(set(ids) - have), sorted(have - set(ids))
            res["lost"] += len(lost)
            if lost or extra:
                probs.append(f"{path.name}: {len(lost)} lost {lost[:3]}, {len(extra)} unexpected {extra[:3]}")
        left = sorted(tmp_files(c.dir) | (tmp_files(self.cache) - shared_before))
        res["tmp_files"] = len(left)
        if left:
            probs.append(f"leftover tmp: {[os.path.relpath(p, self.work) for p in left[:3]]}")
        if c.case.check:
            ok, note = c.case.check(c)
            res["note"] = note
            if not ok:
                probs.append(note)
        if not probs:
            res["verdict"] = "PASS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="run only cases whose name contains one of these comma-separated substrings")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--fast", action="store_true", help="the fast form, run in CI (tests/test_faults.py): group S "
                    "(security) alone, a few minutes; no mounts, signals or long benches")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--workdir", default="/tmp/wo-fault-matrix", help="scratch dir (cache, inputs, results)")
    args = ap.parse_args()
    subs = [s.strip().lower() for s in (args.only or "").split(",") if s.strip()]
    cases = [k for k in CASES if (not subs or any(s in k.name.lower() for s in subs))
             and (not args.fast or k.group in FAST)]
    if args.list:
        for k in cases:
            print(k.name)
        print(f"{len(cases)} cases: " + ", ".join(f"{g} {sum(k.group == g for k in cases)}" for g in "ABCDEFGS"))
        return 0
    if not FLACS:
        print(f"no LibriSpeech audio under {LIBRI}", file=sys.stderr)
        return 2
    h = Harness(Path(args.workdir).resolve())
    h.prepare()
    tested = subprocess.run([sys.executable, "-c", "import whisperopt as w; print(w.__file__, w.__version__)"],
                            env=ENV, cwd=h.work, capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    print(f"testing {tested or '?'} at {head.stdout.strip()[:70] or '?'}")
    results, t0 = [], time.time()
    width = max(len(k.name) for k in cases)
    print(f"{'case':<{width}} | rc (runs in order) | verdict | first error line")
    for k in cases:
        res = h.run_case(k)
        results.append(res)
        rc = "/".join(str(x) for x in res["rc"]) or "-"
        print(f"{k.name:<{width}} | {rc:<18} | {res['verdict']:<7} | {res['first_error'][:110]}", flush=True)
        for line in (res["problems"] if res["verdict"] == "FAIL" else [res["note"]] if (k.quiet or res["verdict"] == "n/a") and res["note"] else []):
            print(f"{'':<{width}}   - {line[:160]}", flush=True)
    tot = {"cases": len(results), "passed": sum(r["verdict"] == "PASS" for r in results),
           "failed": sum(r["verdict"] == "FAIL" for r in results), "n/a": sum(r["verdict"] == "n/a" for r in results),
           **{key: sum(r[key] for r in results) for key in ("tracebacks", "lost", "doubled", "orphans", "tmp_files")},
           "minutes": round((time.time() - t0) / 60, 1)}
    print("\ntotals: " + ", ".join(f"{v} {k}" for k, v in tot.items()))
    quiet = [r for r in results if r["quiet"]]
    if quiet:
        print("\nwrong-but-quiet candidates, what each does now:")
        for r in quiet:
            print(f"  {r['name']}: rc {'/'.join(map(str, r['rc']))}; {r['note'] or r['first_error']}"[:200])
    failed = [r for r in results if r["verdict"] == "FAIL"]
    if failed:
        print("\nfailed:")
        for r in failed:
            print(f"  {r['name']} (rc {'/'.join(map(str, r['rc']))}): {'; '.join(r['problems'])[:300]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"tested": f"{tested} at {head.stdout.strip()}", "totals": tot, "cases": results}, indent=2, ensure_ascii=False))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
