"""File helpers used across the layers: atomic writes (a reader never sees half a file or directory), hard links
that fall back to copies, installed package versions."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from .errors import WhisperoptError

LOW_SPACE = 16 << 20  # bytes free below which a failed write is put down to a full disk

# an OSError in a few words, without its number (one table for reads and writes)
_REASONS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.ELOOP: "symbolic link loop",
            errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
            errno.EDQUOT: "disk quota exceeded"}
_UNWRITABLE = {n: _REASONS[n] for n in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)}


def os_reason(exc: OSError) -> str:
    """An OSError in a few words, without its number: "symbolic link loop", "no space left on device", ..."""
    return _REASONS.get(exc.errno) or (exc.strerror or str(exc) or type(exc).__name__).lower()


def _free_bytes(path: Path) -> int | None:
    for p in (Path(path), *Path(path).parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def write_failure(exc: BaseException, where: Path | None) -> WhisperoptError | None:
    """The one-line error for a write into ``where`` that failed with ``exc``, or None if it is not a disk problem.
    A full disk is recognised by errno, or by the free space left when an engine reports it in its own words
    (torch: "unexpected pos")."""
    if isinstance(exc, WhisperoptError):
        return None
    reason = None
    cause: BaseException | None = exc
    while cause is not None and reason is None:  # the errno, here or on an exception this one was raised from
        reason = _UNWRITABLE.get(getattr(cause, "errno", None))
        if reason is None and os.strerror(errno.ENOSPC) in str(cause):  # an engine's own wording (safetensors)
            reason = "no space left on device"
        cause = cause.__cause__ or cause.__context__
    if reason is None:
        free = _free_bytes(where) if where is not None else None
        if free is None or free >= LOW_SPACE:
            return None
        reason = "no space left on device"
    if where is None:
        return WhisperoptError(f"a write failed: {reason}")
    free = _free_bytes(where)
    left = f", {free / 1e6:.1f} MB free" if reason == "no space left on device" and free is not None else ""
    return WhisperoptError(f"cannot write {where}: {reason}{left}")


def _clear_abandoned(target: Path) -> None:
    """Remove half-written siblings of ``target`` left by a process that was killed (its pid is in their name)."""
    for p in target.parent.glob(f".{glob.escape(target.name)}-*-*"):
        pid = p.name[len(target.name) + 2:].split("-", 1)[0]
        if not pid.isdigit() or not p.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # its writer is gone
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """A temporary sibling of ``target`` to write into; it replaces ``target`` only if the block succeeds, so a
    reader never sees half a model (a crash leaves the old one or none). A write that fails for want of space or
    permission is a one-line error naming the directory."""
    target = Path(target)
    if target.is_symlink():  # replacing it would write through, or over, whatever the link points at
        raise WhisperoptError(f"{target} is a symbolic link; give the directory itself")
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _clear_abandoned(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-{os.getpid()}-", dir=str(target.parent)))
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except Exception as exc:
        err = write_failure(exc, target.parent)
        if err is None:
            raise
        raise err from exc
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary sibling, then rename it over ``path``; nothing is left behind if it fails (a
    full disk or a read-only directory is a one-line error)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        err = write_failure(exc, path.parent)
        if err is None:
            raise
        raise err from exc
    finally:
        tmp.unlink(missing_ok=True)


def finite(data):
    """``data`` with every NaN or infinite float (numpy's too) replaced by None, so that it is valid JSON."""
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    if isinstance(data, float) or (hasattr(data, "dtype") and getattr(data, "ndim", 1) == 0
                                   and data.dtype.kind == "f"):
        value = float(data)
        return value if math.isfinite(value) else None
    return data


def json_text(data, **kwargs) -> str:
    """The one JSON encoder of everything whisperopt writes: non-finite floats become null (bare ``NaN`` /
    ``Infinity`` are not JSON to other tools), and any left are refused rather than written."""
    return json.dumps(finite(data), allow_nan=False, **kwargs)


def atomic_write_json(path: Path, data, **kwargs) -> None:
    atomic_write_text(path, json_text(data, indent=2, **kwargs))


def confined(root: Path, relative: str | Path) -> Path:
    """``root / relative`` for a name that came from data (a results file, a manifest): refused in one line when
    it is absolute, has a ``..`` part, or resolves (through links) outside ``root``."""
    rel = Path(relative)
    if not str(relative) or rel.is_absolute() or ".." in rel.parts or "\0" in str(relative):
        raise WhisperoptError(f"{str(relative)!r} is not a plain relative path inside {root}")
    path = Path(root) / rel
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise WhisperoptError(f"{str(relative)!r} leads outside {root}")
    return path


def read_json(path: Path, what: str = "file", fix: str = ""):
    """A JSON file whisperopt wrote; a damaged one (empty, torn, not JSON) is a one-line error saying what it is
    and, in ``fix``, what to do."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = "empty" if not Path(path).stat().st_size else f"not valid JSON: {exc.__class__.__name__}"
        raise WhisperoptError(f"{what} {path} is damaged ({why}){'; ' + fix if fix else ''}") from None
    except OSError as exc:
        raise WhisperoptError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks (artifact file tables, export tables, copy checks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk), or copy it where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def dist_version(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
