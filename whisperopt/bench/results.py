"""A results directory's files: one fsync'ed JSON line per measured utterance (rows) or resource slice (one worker
process's share of a run: its wall, CPU and load seconds and its memory), the per-recipe paths the runner, the worker
and the report share, and what the report needs of each record it reads (a status file itself is read and written by
``records``)."""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from ..errors import WhisperoptError
from ..files import confined, json_text

LOCK_FILE = ".whisperopt.lock"
# a recipe or named variant (R@key=value, recipes.get_recipe) as it names files in a results directory: no path
# separator, no leading dot, so a name read from run.json or a status file cannot reach outside the directory
RESULT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(@[A-Za-z0-9_.+-]+=[A-Za-z0-9_.+-]+)*")


def result_name_problem(name) -> str | None:
    """Why ``name`` cannot name a recipe's results files, or None."""
    if not isinstance(name, str) or not RESULT_NAME.fullmatch(name) or len(name) > 200:
        return f"{str(name)[:80]!r} is not a recipe name (letters, digits, . _ + -, variants R@key=value)"
    return None


def recipe_paths(out_dir: Path, recipe: str) -> dict[str, Path]:
    problem = result_name_problem(recipe)
    if problem:
        raise WhisperoptError(f"results in {out_dir}: {problem}")
    out_dir = Path(out_dir)
    return {
        "rows": confined(out_dir, f"{recipe}.rows.jsonl"),
        "slices": confined(out_dir, f"{recipe}.segments.jsonl"),  # the file's name from before they were slices
        "status": confined(out_dir, f"{recipe}.status.json"),
        "log": confined(out_dir, f"logs/{recipe}.log"),
    }


class ResultsLock:
    """An exclusive lock on a results directory for one benchmark at a time (``flock``: released by the kernel when
    the holder dies, so a crash leaves no stale lock). A second bench on the same directory fails in one line."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> ResultsLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise WhisperoptError(f"{self.path.parent} is in use by another whisperopt bench (pid {owner}); wait for "
                                  "it to finish or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ---- what the report reads from each record, checked before it is used: a results file whisperopt did not write
# (hand-edited, from another tool, crafted) is a one-line error naming the file, never a crash in the report


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _positive(v) -> bool:
    return _count(v) and v > 0


def _text(v) -> bool:
    return isinstance(v, str)


def _mapping(v) -> bool:
    return isinstance(v, dict)


def optional(check):
    return lambda v: v is None or _valid(v, check)


def list_of(check):
    return lambda v: isinstance(v, list) and all(_valid(x, check) for x in v)


def pair(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_num(x) for x in v)


def _error_counts(v) -> bool:  # metrics.wer.ErrorCounts, field for field
    return v is None or (isinstance(v, dict) and set(v) == {"substitutions", "deletions", "insertions", "hits"}
                         and all(_count(x) for x in v.values()))


class need:  # noqa: N801 - reads as a field's marker in the tables below
    """A field that must be there (the others may be left out)."""

    def __init__(self, check):
        self.check = check


def _valid(value, check) -> bool:
    return _problem(value, check) is None if isinstance(check, dict) else bool(check(value))


def _problem(record, spec: dict) -> str | None:
    """Why ``record`` does not fit ``spec`` ({key: check or need(check)}), or None."""
    if not isinstance(record, dict):
        return f"not an object but {type(record).__name__}"
    for key, check in spec.items():
        if key not in record:
            if isinstance(check, need):
                return f"no {key!r}"
            continue
        if not _valid(record[key], check.check if isinstance(check, need) else check):
            return f"{key!r} is {json.dumps(record[key], default=str)[:40]}"
    return None


ROW_FIELDS = {"id": need(_text), "latency_s": need(_num), "duration_s": need(_num), "tokens": need(_count),
              "batch": _positive,
              "words": _error_counts, "chars": _error_counts, "cpu_model": optional(_text)}
SLICE_FIELDS = {"wall_s": need(_num), "cpu_s": need(_num), "load_s": need(optional(_num)),
                "peak_ram_mb": optional(_num), "run_ram_mb": optional(_num), "peak_vram_mb": optional(_num)}
_THROUGHPUT = {"batch": need(_positive), "rtfx": need(optional(_num)), "run_ram_mb": need(optional(_num)),
               "same_text": need(_num)}
_PACKED = {"rtfx": optional(_num), "gap_s": need(_num), "windows": optional(_count), "alone": optional(_count),
           "utterances": optional(_count), "wer_delta": optional(_num), "wer_delta_ci": optional(pair),
           "wer_delta_significant": optional(lambda v: isinstance(v, bool)), "skipped": optional(_text),
           "note": optional(_text)}
_COMPONENT = {"bin_bytes": optional(_num), "compression": optional(_num)}
STATUS_FIELDS = {"recipe": need(_text), "status": need(lambda v: v in ("ok", "failed", "skipped")),
                 "reason": optional(_text), "error": optional(_text), "size_bytes": optional(_num),
                 "encoder_rel_error": optional(_num), "teacher_forced_agreement": optional(_num),
                 "fidelity_note": optional(_text), "fidelity_method": optional(_text),
                 "not_comparable": optional(_text), "own_settings": optional(_text), "engine": optional(_text),
                 "decode_settings": optional(_mapping), "options": optional(_mapping),
                 "isa_path": optional({"precision": optional(_text), "isa": optional(_text),
                                       "engine": optional(_text)}),
                 "manifest": optional({"components": optional(lambda v: isinstance(v, dict) and all(
                     _valid(c, optional(_COMPONENT)) for c in v.values()))}),
                 "throughput": optional(list_of(_THROUGHPUT)), "packed": optional(_PACKED),
                 **dict.fromkeys(("encoder_ms_median", "decoder_ms_median", "decoder_first_ms_median",
                                  "decoder_step_ms_median"), optional(_num))}


def status_problem(status: dict, name: str) -> str | None:
    """Why a status file is not one the report can read (the fields it uses of the types it needs, for recipe
    ``name``), or None (``records.read_status`` reads it)."""
    problem = _problem(status, STATUS_FIELDS)
    if problem is None and status["recipe"] != name:
        problem = f"it is the status of {status['recipe'][:80]!r}"
    packed = (status or {}).get("packed") if problem is None else None
    if packed and not packed.get("skipped") and not all(_count(packed.get(k)) for k in ("windows", "utterances")):
        problem = "its packed pass has no window or utterance count"
    return problem


def read_rows(path: Path, key: str | None = "id", fields: dict | None = None) -> list[dict]:
    """Rows saved so far, one per ``key`` (the first; a row without it is not a row; None: every line, as in a
    slices file); a torn or invalid line (a process killed mid-write) is ignored. With ``fields`` (``ROW_FIELDS``,
    ``SLICE_FIELDS``) a whole JSON line that lacks one, or holds the wrong type, is a one-line error naming the
    file and line: it was not torn by a crash, so something other than whisperopt wrote it."""
    rows, seen = [], set()
    if not Path(path).exists():
        return rows
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            problem = _problem(row, fields) if fields is not None else None
            if problem:
                raise WhisperoptError(f"{path}:{line_no}: not a whisperopt row ({problem}); delete that line and "
                                      "re-run the bench to measure it again")
            if not isinstance(row, dict):
                continue
            if key is not None:
                if key not in row or row[key] in seen:
                    continue
                seen.add(row[key])
            rows.append(row)
    return rows


def repair_rows(path: Path) -> int:
    """Cut a torn last line (a crash mid-write leaves no trailing newline) so the next row starts on its own line;
    returns the bytes dropped. Its utterance has no row, so a resumed run measures it again."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return len(data) - keep


def append_row(f, row: dict) -> None:
    f.write(json_text(row) + "\n")
    f.flush()
    os.fsync(f.fileno())
