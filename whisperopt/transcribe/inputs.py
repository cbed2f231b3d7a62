"""``whisperopt transcribe`` over many inputs: the input list (``--files-from``, bounded), one output name per input
(never two inputs on one file, never an output over an input), and which inputs an earlier run finished already.

Output names follow openai-whisper (``-o DIR/<stem>.<fmt>``) as long as the stems differ. Inputs that share a stem
keep their extension (``a.mp3.srt``, ``a.opus.srt``); inputs that share the whole file name (``a/x.wav``,
``b/x.wav``, as a ``--files-from`` list over a corpus gives) mirror their path below the folder they have in common
(``-o DIR/a/x.srt``, ``DIR/b/x.srt``), the layout whisper.cpp users get by writing next to each input and rsync
users expect. Refusing instead would leave such a list no way to run in one go, and the skip-if-done check of a
re-run uses the same names, so an interrupted run resumes exactly."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import WhisperoptError
from .writers import output_paths, outputs_complete

MAX_LIST_BYTES = 16 << 20  # --files-from is read up to this (/dev/zero must not fill the memory)
MAX_LIST_LINE = 4096  # bytes in one line (Linux's PATH_MAX)
MAX_LIST_INPUTS = 1_000_000
STDIN = "-"


def read_file_list(path: Path) -> list[str]:
    """Inputs listed in a file (``transcribe --files-from``): a ``.jsonl`` manifest (its ``audio`` fields, as in
    ``data.datasets.load_manifest``; ``text`` not needed) or plain text, one path per line (``#`` comments and blank
    lines skipped). Relative paths are relative to the list's directory. At most ``MAX_LIST_BYTES``, lines of at
    most ``MAX_LIST_LINE`` bytes and ``MAX_LIST_INPUTS`` inputs: past any, a one-line error before any work."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LIST_BYTES + 1)
        raw = data.decode("utf-8")
    except OSError as exc:
        raise WhisperoptError(f"--files-from {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise WhisperoptError(f"--files-from {path}: not UTF-8 text") from None
    if len(data) > MAX_LIST_BYTES:
        raise WhisperoptError(f"--files-from {path} is larger than {MAX_LIST_BYTES >> 20} MiB; split it into "
                              "several lists and runs")
    names = []
    for line_no, line in enumerate(raw.splitlines(), 1):
        if len(line.encode()) > MAX_LIST_LINE:
            raise WhisperoptError(f"{path}:{line_no}: longer than {MAX_LIST_LINE} bytes; one path per line")
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix == ".jsonl":
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WhisperoptError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("audio"), str):
                raise WhisperoptError(f"{path}:{line_no}: each line needs an 'audio' field")
            line = rec["audio"]
        if "\0" in line:
            raise WhisperoptError(f"{path}:{line_no}: a path with a NUL byte")
        audio = Path(line).expanduser()
        names.append(str(audio if audio.is_absolute() else path.parent / audio))
        if len(names) > MAX_LIST_INPUTS:
            raise WhisperoptError(f"--files-from {path} lists more than {MAX_LIST_INPUTS} inputs; split it into "
                                  "several lists and runs")
    if not names:
        raise WhisperoptError(f"--files-from {path} lists no inputs")
    return names


def check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WhisperoptError(f"output directory {out} is not writable: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise WhisperoptError(f"output directory {out} is not writable")


def output_names(inputs: list[str]) -> list[str]:
    """One output name per input (a relative path without the format's extension; see the module's docstring)."""
    stems = ["stdin" if n == STDIN else Path(n).stem for n in inputs]
    names = list(stems)
    for stem in sorted(set(stems)):
        group = [i for i, k in enumerate(stems) if k == stem]
        if len(group) < 2:
            continue
        files = [i for i in group if inputs[i] != STDIN]  # stdin keeps "stdin"; a file stdin.wav gets its full name
        if len({Path(inputs[i]).name for i in files}) == len(files):
            for i in files:
                names[i] = Path(inputs[i]).name
            continue
        where = [os.path.abspath(inputs[i]) for i in files]
        common = os.path.commonpath([os.path.dirname(w) for w in where])
        mirrored = [Path(os.path.relpath(w, common)) for w in where]
        keep_suffix = len({m.with_suffix("").as_posix() for m in mirrored}) < len(mirrored)
        for i, m in zip(files, mirrored):
            names[i] = (m if keep_suffix else m.with_suffix("")).as_posix()
    return names


def _dedupe(inputs: list[str], log: Callable[[str], None]) -> list[str]:
    """The inputs with a file listed twice (by its resolved path) kept once: its transcript would be the same."""
    seen, kept = {}, []
    for name in inputs:
        key = name if name == STDIN else os.path.realpath(name)
        if key in seen:
            log(f"{name}: listed twice (also as {seen[key]}); transcribed once")
            continue
        seen[key] = name
        kept.append(name)
    return kept


def _check_outputs(inputs: list[str], names: list[str], out_dir: Path, formats: list[str]) -> None:
    """Refuse, before any work, two inputs on one output file or an output that is one of the inputs."""
    owner: dict[str, str] = {}
    for name, out in zip(inputs, names):
        if out in owner:
            raise WhisperoptError(f"{owner[out]} and {name} would both be written to {Path(out_dir) / out}.*; rename "
                                  "one, or transcribe them in separate runs")
        owner[out] = name
    sources = {os.path.realpath(n): n for n in inputs if n != STDIN}
    for name, out in zip(inputs, names):
        for target in output_paths(out, out_dir, formats):
            victim = sources.get(os.path.realpath(target))
            if victim is not None:
                what = "that input itself" if victim == name else f"the input {victim}"
                raise WhisperoptError(f"{name}: its transcript {target} would overwrite {what}; use another "
                                      "--output-dir (-o)")


def plan(inputs: list[str], out_dir: Path, formats: list[str], overwrite: bool,
         log: Callable[[str], None] = print, problem: Callable[[str], str | None] | None = None
         ) -> tuple[list[tuple[str, str]], int, list[str]]:
    """``(todo, done, failed)``: the inputs to transcribe with their output names, how many an earlier run finished
    (skipped unless ``overwrite``), and those ``problem`` (``data.audio.audio_file_problem``) refuses, each said in
    one line. A list that would lose a transcript or overwrite an input is refused first, in one line."""
    if inputs.count(STDIN) > 1:
        raise WhisperoptError("standard input (-) can be read only once")
    inputs = _dedupe(inputs, log)
    names = output_names(inputs)
    _check_outputs(inputs, names, out_dir, formats)
    todo, done, failed = [], 0, []
    for name, out in zip(inputs, names):
        why = None if name == STDIN or problem is None else problem(name)  # fail before the model loads
        if why:
            print(f"whisperopt: error: {name}: {why}", file=sys.stderr)
            failed.append(name)
        elif name != STDIN and not overwrite and outputs_complete(out, out_dir, formats):
            log(f"{name}: skipped (outputs exist; --overwrite to redo)")  # a finished input of an earlier run
            done += 1
        else:
            todo.append((name, out))
    return todo, done, failed
