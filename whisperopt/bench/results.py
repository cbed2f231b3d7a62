"""A results directory's files: one fsync'ed JSON line per measured utterance (rows) or worker segment, and the
per-recipe paths the runner, the worker and the report share."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from ..errors import WhisperoptError

LOCK_FILE = ".whisperopt.lock"


def recipe_paths(out_dir: Path, recipe: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "rows": out_dir / f"{recipe}.rows.jsonl",
        "segments": out_dir / f"{recipe}.segments.jsonl",
        "status": out_dir / f"{recipe}.status.json",
        "log": out_dir / "logs" / f"{recipe}.log",
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


def read_status(path: Path) -> dict:
    """A recipe's status file: {} when there is none; a damaged one (torn, empty, not JSON) reads as a failure
    saying so, and the next bench run measures that recipe again (its saved rows are kept)."""
    try:
        status = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        status = f"{type(exc).__name__}"
    if isinstance(status, dict) and isinstance(status.get("status"), str):
        return status
    return {"recipe": Path(path).name.removesuffix(".status.json"), "status": "failed", "stage": "status",
            "error": f"status file {path} is damaged ({status if isinstance(status, str) else 'not a status'}); "
                     "re-run the bench to measure it again"}


def read_rows(path: Path, key: str | None = "id") -> list[dict]:
    """Rows saved so far, one per ``key`` (the first; a row without it is not a row; None: every line, as in a
    segments file); a torn or invalid line (a process killed mid-write) is ignored."""
    rows, seen = [], set()
    if not Path(path).exists():
        return rows
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
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
    f.write(json.dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())
