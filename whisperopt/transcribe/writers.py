"""Output writers for transcripts: txt, srt, vtt, json, tsv — written atomically, timestamps monotonic."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import WhisperoptError
from ..files import atomic_write_text

FORMATS = ["txt", "srt", "vtt", "json", "tsv"]


@dataclass
class Segment:
    start: float  # seconds
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    temperature: float | None = None
    compression_ratio: float | None = None
    words: list[dict] | None = None  # with word timestamps: [{"start", "end", "word"}, ...]


@dataclass
class TranscriptResult:
    segments: list[Segment]
    language: str | None = None
    language_probability: float | None = None
    duration: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


def format_timestamp(seconds: float, decimal: str = ".", always_hours: bool = False) -> str:
    if seconds < 0:
        raise ValueError("negative timestamp")
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cues(result: TranscriptResult) -> list[tuple[float, float, str]]:
    """Segments with text, clamped so that times never go backwards and every cue has end > start."""
    out, last = [], 0.0
    for s in result.segments:
        text = s.text.strip().replace("-->", "->")
        if not text:
            continue
        start = max(s.start, last)
        end = max(s.end, start + 0.001)
        out.append((start, end, text))
        last = end
    return out


def render(result: TranscriptResult, fmt: str) -> str:
    if fmt == "txt":
        return "".join(f"{text}\n" for _, _, text in _cues(result))
    if fmt == "srt":
        return "".join(
            f"{i}\n{format_timestamp(a, ',', True)} --> {format_timestamp(b, ',', True)}\n{text}\n\n"
            for i, (a, b, text) in enumerate(_cues(result), 1)
        )
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(
            f"{format_timestamp(a, '.', True)} --> {format_timestamp(b, '.', True)}\n{text}\n\n"
            for a, b, text in _cues(result)
        )
    if fmt == "tsv":
        return "start\tend\ttext\n" + "".join(
            f"{round(1000 * a)}\t{round(1000 * b)}\t{text.replace(chr(9), ' ')}\n" for a, b, text in _cues(result)
        )
    if fmt == "json":
        return json.dumps({"text": result.text, "language": result.language,
                           "language_probability": result.language_probability, "duration": result.duration,
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


def write_outputs(result: TranscriptResult, stem: str, out_dir: Path, formats: list[str]) -> list[Path]:
    """Write each format to ``out_dir/stem.<fmt>`` atomically (``files.atomic_write_text``: temp file + rename)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WhisperoptError(f"output directory {out_dir} is not writable: {exc.strerror or exc}") from None
    paths = []
    for fmt in formats:
        target = out_dir / f"{stem}.{fmt}"
        text = render(result, fmt)
        try:
            atomic_write_text(target, text)
        except OSError as exc:
            raise WhisperoptError(f"cannot write {target}: {exc.strerror or exc}") from None
        paths.append(target)
    return paths
