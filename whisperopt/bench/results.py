"""A results directory's files: one fsync'ed JSON line per measured utterance (rows) or worker segment, and the
per-recipe paths the runner, the worker and the report share."""

from __future__ import annotations

import json
import os
from pathlib import Path


def recipe_paths(out_dir: Path, recipe: str) -> dict[str, Path]:
    out_dir = Path(out_dir)
    return {
        "rows": out_dir / f"{recipe}.rows.jsonl",
        "segments": out_dir / f"{recipe}.segments.jsonl",
        "status": out_dir / f"{recipe}.status.json",
        "log": out_dir / "logs" / f"{recipe}.log",
    }


def read_rows(path: Path) -> list[dict]:
    """Rows saved so far; a torn last line (process killed mid-write) is ignored."""
    rows = []
    if not Path(path).exists():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_row(f, row: dict) -> None:
    f.write(json.dumps(row) + "\n")
    f.flush()
    os.fsync(f.fileno())
