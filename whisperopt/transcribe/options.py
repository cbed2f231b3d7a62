"""The long-form transcription settings (``TranscribeOptions``, openai-whisper's defaults) and what a transcription
knows about its input besides its segments (``TranscriptionInfo``, faster-whisper's fields)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import WhisperoptError
from ..recipes.base import check_decode_limits
from .packing import DEFAULT_GAP_S, check_gap
from .vad import VAD_DEFAULTS, check_vad

MODES = ("sequential", "batched", "plain")
TASKS = ("transcribe", "translate")
PLAIN_MODE = "--mode plain (fixed 30-s chunks, one segment per chunk, text only)"


@dataclass(frozen=True)
class TranscribeOptions:
    """Long-form decoding settings; defaults are openai-whisper's ``transcribe()`` defaults (greedy at T=0)."""

    language: str | None = None  # None or "auto": detect from the first non-silent window
    task: str = "transcribe"  # or "translate" (to English)
    mode: str = "sequential"  # sequential | batched | plain
    beam_size: int = 1  # beam search at temperature 0
    best_of: int = 5  # sampled candidates at temperature > 0
    temperature: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # fallback sequence
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    without_timestamps: bool = False  # sequential/batched: one segment per window
    max_new_tokens: int = 224
    batch_size: int = 8  # windows per engine call (batched and plain modes)
    silence_threshold: float = 1e-3  # peak |sample| below this (-60 dBFS): the window is silence, not decoded
    word_timestamps: bool = False
    hallucination_silence_threshold: float | None = None  # s; sequential, with word timestamps (guards.py)
    loop_repeats: int | None = None  # an n-gram said this often in a row: fall back, then cut (guards.py)
    pack: bool = False  # transcribe_clips: several clips per window, split back by timestamp (packing.py)
    pack_gap: float = DEFAULT_GAP_S  # seconds of silence after each packed clip
    vad_filter: bool = False  # decode only the speech Silero VAD finds, in chunks (vad.py); faster-whisper's names:
    vad_threshold: float = VAD_DEFAULTS["vad_threshold"]  # speech probability
    vad_min_silence_ms: int = VAD_DEFAULTS["vad_min_silence_ms"]  # a pause this long ends a speech region
    vad_speech_pad_ms: int = VAD_DEFAULTS["vad_speech_pad_ms"]  # kept on each side of a region
    vad_min_speech_ms: int = VAD_DEFAULTS["vad_min_speech_ms"]  # shorter regions dropped
    vad_max_chunk_s: float = VAD_DEFAULTS["vad_max_chunk_s"]  # speech per chunk (window), <= 30

    def check(self) -> None:
        if self.mode not in MODES:
            raise WhisperoptError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.task not in TASKS:
            raise WhisperoptError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        check_decode_limits(beam_size=self.beam_size, best_of=self.best_of, batch_size=self.batch_size,
                            max_new_tokens=self.max_new_tokens)
        if not self.temperature or any(t < 0 for t in self.temperature):
            raise WhisperoptError(f"temperatures must be a non-empty list of numbers >= 0, got {self.temperature}")
        if self.pack and (self.mode == "plain" or self.without_timestamps):
            raise WhisperoptError("--pack splits windows by their timestamp tokens: it cannot run with "
                                  f"{'--mode plain' if self.mode == 'plain' else '--without-timestamps'}")
        check_gap(self.pack_gap)
        check_vad(self)
        threshold = self.hallucination_silence_threshold
        if threshold is not None and not (threshold > 0 and self.word_timestamps and self.mode == "sequential"):
            raise WhisperoptError("--hallucination-silence-threshold needs a number of seconds > 0, --word-timestamps "
                                  f"and --mode sequential (as in openai-whisper), got {threshold}, word timestamps "
                                  f"{'on' if self.word_timestamps else 'off'}, --mode {self.mode}")
        if self.loop_repeats is not None and not 2 <= self.loop_repeats <= 50:
            raise WhisperoptError(f"--loop-repeats must be between 2 and 50, got {self.loop_repeats}")


@dataclass
class TranscriptionInfo:
    """What ``Transcriber.stream`` knows about an input besides its segments (faster-whisper's fields).

    ``language`` (and its probability) is set when ``stream`` returns: given, English for English-only checkpoints,
    or detected from the first non-silent window (None if there is none). ``duration`` is the container's stated
    duration (None where unknown: stdin, a stream) until the segments have all been read; then it is the duration
    actually decoded.
    """

    language: str | None
    language_probability: float | None
    duration: float | None
    all_language_probs: list[tuple[str, float]] | None = None  # detected: every language, most likely first
    transcription_options: TranscribeOptions = field(default_factory=TranscribeOptions)
    vad: dict | None = None  # --vad-filter: its options, then the speech found (speech_s) and chunks decoded
