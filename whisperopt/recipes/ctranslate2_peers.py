"""faster-whisper as its users run it: the labelled peer rows that run ct2-int8's artifact through faster-whisper's
own API with its own defaults, not the bench's decoding (``recipes/ctranslate2.py`` declares them).

* ``FWDefaultsRuntime`` (``ct2-int8-fw-defaults``): ``WhisperModel.transcribe(audio, language=..., task=...)``.
* ``FWBatchedRuntime`` (``ct2-int8-fw-batched``): ``BatchedInferencePipeline(model).transcribe(audio,
  language=..., task=...)``, what faster-whisper's README gives for long audio: Silero VAD on (``vad_filter=True``,
  its pipeline's VAD options: 160-ms minimum silence, speech split at 30 s), speech regions merged into <= 30-s
  chunks, ``batch_size=8`` chunks per ``generate`` call, beam 5, no timestamps inside a chunk (one segment per
  chunk), no fallback, no conditioning. It is also the engine's own long-form pipeline
  (``Runtime.transcribe_file``), which the long-form bench runs on whole files (its mode ``native``); like
  faster-whisper, it reads the whole file into memory first.

Both use faster-whisper's own front end (log-mel of the audio, features zero-padded), and both say in ``run_info()``
that their settings are their own (WER comparable, time not like-for-like).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..constants import N_SAMPLES, SAMPLE_RATE
from ..files import dist_version
from .base import Artifact, DecodeOptions, FileTranscript, Transcription
from .ctranslate2_runtime import CT2Runtime, ct2_isa_path

if TYPE_CHECKING:
    from .ctranslate2 import CT2Recipe

# faster-whisper's transcribe arguments that say nothing about decoding (left out of run_info)
_FW_NOT_SETTINGS = {"self", "audio", "language", "task", "prepend_punctuations", "append_punctuations", "vad_parameters",
                    "initial_prompt", "prefix", "hotwords", "clip_timestamps", "log_progress"}
FW_DEFAULTS_NOTE = ("faster-whisper's own WhisperModel.transcribe defaults and front end, not the bench's decoding "
                    "(only language and task are the bench's): WER is comparable (same audio and references), the "
                    "settings differ (beam 5, timestamps, temperature fallback, conditioning), so its time is "
                    "what a default faster-whisper user gets, not a like-for-like engine comparison")
FW_BATCHED_NOTE = ("faster-whisper's own BatchedInferencePipeline defaults and front end, not the bench's decoding "
                   "(only language and task are the bench's): Silero VAD on, speech merged into <= 30-s chunks, 8 "
                   "chunks per batch, beam 5, no timestamps, no fallback; WER is comparable (same audio and "
                   "references), its time is what a faster-whisper user running it on long audio gets, not a "
                   "like-for-like engine comparison")


class FWDefaultsRuntime(CT2Runtime):
    """faster-whisper as users run it: ``WhisperModel.transcribe(audio, language=..., task=...)``, nothing else set,
    with faster-whisper's own front end (log-mel of the audio, features zero-padded). Decoded differently from every
    other row, and says so in ``run_info()``."""

    api = "WhisperModel.transcribe(audio, language=..., task=...) with every other argument at faster-whisper's default"
    note = FW_DEFAULTS_NOTE

    def __init__(self, recipe: CT2Recipe, artifact: Artifact, device: str, threads: int):
        super().__init__(recipe, artifact, device, threads)
        self.model.feature_extractor = self.model.feature_extractor._native  # faster-whisper's own front end
        self.not_comparable: str | None = None
        self.generate_calls = self.utterances = 0
        self.ignored: set[str] = set()

    def _entry(self):
        """The faster-whisper call that transcribes: (function, its signature's owner for the defaults)."""
        from faster_whisper import WhisperModel

        return self.model.transcribe, WhisperModel.transcribe

    def _defaults(self) -> dict:
        params = inspect.signature(self._entry()[1]).parameters
        return {k: p.default for k, p in params.items() if k not in _FW_NOT_SETTINGS}

    def transcribe(self, audios, options, forced_lengths=None):
        bench = DecodeOptions()
        self.ignored |= {k for k in ("beam_size", "max_new_tokens") if getattr(options, k) != getattr(bench, k)}
        if forced_lengths and not self.not_comparable:
            self.not_comparable = ("faster-whisper's defaults cannot force a decode length (it stops at end-of-text, "
                                   "re-decodes on temperature fallback and seeks on timestamps), so on random weights "
                                   "it decodes a different number of tokens than the reference transcript's")
        run = self._entry()[0]
        out = []
        for i, audio in enumerate(audios):
            # random weights fail every fallback threshold: each of the 6 temperatures would decode up to 224 tokens
            # x 5 candidates; capped at the reference's length, the time stays near a real run's (still not equal)
            cap = {"max_new_tokens": forced_lengths[i]} if forced_lengths else {}
            self.recorder.calls.clear()
            segments, _ = run(np.ascontiguousarray(audio[:N_SAMPLES], dtype=np.float32),
                              language=options.language, task=options.task, **cap)
            segments = list(segments)  # the generator does the work
            self.generate_calls += len(self.recorder.calls)
            self.utterances += 1
            # the kept segments' tokens: text and timestamp tokens (fallback re-decodes are counted in run_info)
            out.append(Transcription("".join(s.text for s in segments).strip(),
                                     [int(t) for s in segments for t in s.tokens]))
        self._record(options.language, options.task, bool(forced_lengths))
        return out

    def _record(self, language: str | None, task: str, forced: bool = False) -> None:
        if self.settings is not None:
            return
        self.settings = {
            "engine": f"faster-whisper {dist_version('faster-whisper')} / ctranslate2 {dist_version('ctranslate2')}",
            "api": self.api,
            "settings": self.note,
            "device": self.device,
            "compute_type": self.ct2.compute_type,
            "front_end": "faster-whisper's own (log-mel of the audio, features zero-padded to 3000 frames)",
            "cpu_threads": self.threads,
            "language": language,
            "task": task,
            **self._defaults(),
        }
        if forced:
            self.settings["max_new_tokens"] = ("the reference transcript's token count per window (synthetic "
                                               "weights only: bounds the fallback re-decodes of random output)")

    def run_info(self) -> dict:
        settings = dict(self.settings or {})
        if self.ignored:
            settings["bench_options_not_applied"] = ", ".join(sorted(self.ignored))
        if self.utterances:
            settings["generate_calls_per_utterance"] = round(self.generate_calls / self.utterances, 2)
        info = {"decode_settings": settings, "own_settings": self.note}
        if self.device == "cpu":
            info["isa_path"] = ct2_isa_path(self.recipe.compute_precision)
        if self.not_comparable:
            info["not_comparable"] = self.not_comparable
        return info


class FWBatchedRuntime(FWDefaultsRuntime):
    """faster-whisper's ``BatchedInferencePipeline`` with its defaults (Silero VAD on), on a clip as on a whole file
    (``transcribe_file``, the engine's own long-form pipeline)."""

    api = ("BatchedInferencePipeline(model).transcribe(audio, language=..., task=...) with every other argument at "
           "faster-whisper's default (vad_filter=True, batch_size=8)")
    note = FW_BATCHED_NOTE
    native_long_form = ("faster-whisper's BatchedInferencePipeline with its defaults: Silero VAD, speech merged into "
                        "<= 30-s chunks, 8 per batch, beam 5, one segment per chunk")

    def __init__(self, recipe: CT2Recipe, artifact: Artifact, device: str, threads: int):
        from faster_whisper import BatchedInferencePipeline

        super().__init__(recipe, artifact, device, threads)
        self.pipeline = BatchedInferencePipeline(self.model)

    def _entry(self):
        from faster_whisper import BatchedInferencePipeline

        return self.pipeline.transcribe, BatchedInferencePipeline.transcribe

    def transcribe_file(self, audio, language: str | None = None, task: str = "transcribe") -> FileTranscript:
        """``audio``: a path (read whole by faster-whisper's ``decode_audio``, as a user's call does) or an array."""
        source = str(audio) if isinstance(audio, (str, Path)) else np.ascontiguousarray(audio, dtype=np.float32)
        self.recorder.calls.clear()
        speech: list[dict] = []
        with _speech_found(speech):
            segments, info = self.pipeline.transcribe(source, language=language, task=task)
        segments = [{"start": float(s.start), "end": float(s.end), "text": s.text,
                     **({"words": [{"start": w.start, "end": w.end, "word": w.word} for w in s.words]}
                        if s.words else {})} for s in segments]  # the generator does the work
        self.generate_calls += len(self.recorder.calls)
        self.utterances += 1
        self._record(info.language, task)
        vad = info.vad_options
        return FileTranscript(segments, info.language, float(info.duration),
                              {"speech_s": round(float(info.duration_after_vad), 3),
                               "generate_calls": len(self.recorder.calls),
                               # where the decoded speech lies: a segment (a whole chunk, no timestamps inside)
                               # spans the non-speech left out between its regions, its words do not
                               "speech": [[round(r["start"] / SAMPLE_RATE, 3), round(r["end"] / SAMPLE_RATE, 3)]
                                          for r in speech],
                               "vad_options": asdict(vad) if is_dataclass(vad) else vad})


@contextlib.contextmanager
def _speech_found(found: list):
    """Record the speech regions (samples) faster-whisper's VAD finds during one pipeline call: the
    ``get_speech_timestamps`` its transcribe module calls is wrapped for the call (it runs before the call returns);
    the regions are the ones the pipeline decodes, nothing else changes."""
    import faster_whisper.transcribe as fw

    inner = fw.get_speech_timestamps

    def recorded(*args, **kwargs):
        regions = inner(*args, **kwargs)
        found.extend(regions)
        return regions

    fw.get_speech_timestamps = recorded
    try:
        yield
    finally:
        fw.get_speech_timestamps = inner
