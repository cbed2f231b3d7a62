"""What a transcription gives: its segments (times, text, the decoder's figures, words), the language and the
duration; the writers (``writers.py``), the server and the long-form bench read it."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    vad: dict | None = None  # --vad-filter: its options, the speech found (speech_s) and chunks decoded

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())
