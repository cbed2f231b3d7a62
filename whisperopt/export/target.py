"""Where ``whisperopt export`` may write: ``--out`` is empty or absent, or (``--overwrite``) holds exactly the files an
earlier export listed in its ``whisperopt_export.json`` and nothing else; it is neither inside the results directory
nor around it. Checked before anything is read or written, so a refusal leaves every file as it was.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import WhisperoptError
from ..models.export_record import EXPORT_RECORD, UNLISTED, file_table, on_disk, read_export


def _nested(out: Path, results_dir: Path) -> str | None:
    o, r = out.resolve(), results_dir.resolve()
    if o == r:
        return f"--out {out} is the results directory itself"
    if o.is_relative_to(r):
        return f"--out {out} is inside the results directory {results_dir}"
    if r.is_relative_to(o):
        return f"the results directory {results_dir} is inside --out {out} (replacing --out would delete it)"
    return None


def _earlier_export(out: Path) -> str | None:
    """Why ``out`` is not a folder that an earlier export wrote and nothing else touched, or None."""
    record_file = out / EXPORT_RECORD
    if record_file.is_symlink() or not record_file.is_file():
        return f"it holds no {EXPORT_RECORD}"
    try:
        record = read_export(out, whole=False)
    except WhisperoptError:
        return f"its {EXPORT_RECORD} is empty or not JSON"
    try:
        listed = set(file_table(out, record))
    except WhisperoptError:
        return f"its {EXPORT_RECORD} holds no valid list of the files it wrote"
    present, odd = on_disk(out)
    if odd:
        return f"it holds a link or special file ({odd[0]}) no export writes"
    extra = sorted(present - listed - set(UNLISTED))
    if extra:
        return f"it holds {len(extra)} file(s) the earlier export did not write ({extra[0]})"
    return None


def check_target(out: Path, results_dir: Path, overwrite: bool) -> None:
    """Refuse, in one line, an ``--out`` that exporting into would replace anything but an earlier export."""
    out, results_dir = Path(out), Path(results_dir)
    if out.is_symlink():
        raise WhisperoptError(f"--out {out} is a symbolic link; give the directory itself")
    if out.exists() and not out.is_dir():
        raise WhisperoptError(f"--out {out} is a file, not a directory")
    why = _nested(out, results_dir)
    if why:
        raise WhisperoptError(f"{why}; export elsewhere")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise WhisperoptError(f"--out {out} is not empty; choose another directory or pass --overwrite to replace "
                              "an earlier export")
    why = _earlier_export(out)
    if why:  # --overwrite replaces an export, never a directory of other files
        raise WhisperoptError(f"--out {out} is not empty and not a whisperopt export ({why}); --overwrite "
                              "replaces only an earlier export: choose another directory")
