"""Output writers for transcripts: txt, srt, vtt, json, tsv — written atomically, timestamps monotonic."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from ..errors import WhisperoptError
from ..files import atomic_write_text, json_text, os_reason
from .result import TranscriptResult

FORMATS = ["txt", "srt", "vtt", "json", "tsv"]
_ARROW = re.compile(r"-{2,}>")  # '-->' and longer arrows, which would read as a cue timing line


def format_timestamp(seconds: float, decimal: str = ".", always_hours: bool = False) -> str:
    return _format_ms(round(seconds * 1000), decimal, always_hours)


def _format_ms(ms: int, decimal: str = ".", always_hours: bool = False) -> str:
    if ms < 0:
        raise ValueError("negative timestamp")
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cues(result: TranscriptResult) -> list[tuple[int, int, list[str]]]:
    """Segments with text as (start ms, end ms, lines): whole milliseconds, so that rounding can neither send a cue
    back before the previous one ends nor give it zero length; no blank lines (they would end an SRT/VTT cue) and no
    '-->' (it would read as a timing line)."""
    out, last = [], 0
    for s in result.segments:
        lines = [_ARROW.sub("->", line.strip()) for line in s.text.splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            continue
        start = max(round(s.start * 1000), last)
        end = max(round(s.end * 1000), start + 1)
        out.append((start, end, lines))
        last = end
    return out


def _vtt_text(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;")  # WebVTT cue text: '<' starts a tag, '&' an entity


def render(result: TranscriptResult, fmt: str) -> str:
    if fmt == "txt":
        return "".join(f"{' '.join(lines)}\n" for _, _, lines in _cues(result))
    if fmt == "srt":
        return "".join(
            f"{i}\n{_format_ms(a, ',', True)} --> {_format_ms(b, ',', True)}\n" + "\n".join(lines) + "\n\n"
            for i, (a, b, lines) in enumerate(_cues(result), 1)
        )
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(
            f"{_format_ms(a, '.', True)} --> {_format_ms(b, '.', True)}\n" + "\n".join(map(_vtt_text, lines)) + "\n\n"
            for a, b, lines in _cues(result)
        )
    if fmt == "tsv":
        return "start\tend\ttext\n" + "".join(
            f"{a}\t{b}\t{' '.join(lines).replace(chr(9), ' ')}\n" for a, b, lines in _cues(result)
        )
    if fmt == "json":
        return json_text({"text": result.text, "language": result.language,
                           "language_probability": result.language_probability, "duration": result.duration,
                           **({"vad": result.vad} if result.vad else {}),
                           "segments": [asdict(s) for s in result.segments]}, ensure_ascii=False, indent=2) + "\n"
    raise WhisperoptError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)} or all")


def parse_formats(text: str) -> list[str]:
    names = [f.strip().lower() for f in text.split(",") if f.strip()]
    if "all" in names:
        return list(FORMATS)
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise WhisperoptError(f"unknown output format {', '.join(bad) or repr(text)}; choose from {', '.join(FORMATS)} or all")
    return names


class OutputError(WhisperoptError):
    """A transcript could not be written: the output directory is at fault (full, read-only), not the input."""


def output_paths(stem: str, out_dir: Path, formats: list[str]) -> list[Path]:
    """Where ``write_outputs`` puts each format: ``out_dir/stem.<fmt>`` (``stem`` may hold folders below
    ``out_dir``: ``transcribe.inputs.output_names``)."""
    return [Path(out_dir) / f"{stem}.{fmt}" for fmt in formats]


def outputs_complete(stem: str, out_dir: Path, formats: list[str]) -> bool:
    """True when every format's file exists; written atomically, each one is a finished transcript."""
    return all(p.is_file() for p in output_paths(stem, out_dir, formats))


def write_outputs(result: TranscriptResult, stem: str, out_dir: Path, formats: list[str]) -> list[Path]:
    """Write each format to ``out_dir/stem.<fmt>`` atomically (``files.atomic_write_text``: temp file + rename), so
    a file that exists is complete; a write that fails leaves no temporary file and raises ``OutputError``."""
    paths = output_paths(stem, out_dir, formats)
    try:
        paths[0].parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output directory {paths[0].parent} is not writable: {os_reason(exc)}") from None
    for fmt, target in zip(formats, paths):
        text = render(result, fmt)
        try:
            atomic_write_text(target, text)
        except WhisperoptError as exc:  # a full disk or a read-only directory, in files.py's words
            raise OutputError(str(exc)) from None
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {os_reason(exc)}") from None
    return paths
