"""Long-form transcription of any audio with any recipe: 30-s windows read from a stream, timestamps, seeking.

Modes (``TranscribeOptions.mode``):

* ``sequential`` (default) — openai-whisper's algorithm: decode a 30-s window with timestamp tokens, cut it into
  segments, start the next window at the last complete segment's end; optionally condition on the previous text;
  re-decode at the next temperature when the output is too repetitive (compression ratio) or too unlikely (average
  log-probability); skip windows the model calls silent (no-speech probability).
* ``batched`` — throughput: consecutive non-overlapping 30-s windows, ``batch_size`` per engine call, no
  conditioning; the tail of a window the decode broke off is decoded again (``tails.py``).
* ``plain`` — for engines that return text only (``Runtime.long_form_unsupported``): each 30-s chunk through the
  recipe's ordinary ``transcribe``; one segment per chunk, no scores, no timestamps inside a chunk.

Audio is pulled from ``whisperopt.data.stream`` as it is needed and dropped once decoded, so memory stays bounded
however long the input is. Windows whose peak level is below ``silence_threshold`` are skipped without decoding.

``Transcriber.stream`` works like faster-whisper's ``WhisperModel.transcribe``: it returns ``(segments, info)``, a
lazy generator of segments and a ``TranscriptionInfo`` whose language is known on return.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..constants import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_SAMPLES,
    SAMPLE_RATE,
    WINDOW_FULL,
)
from ..errors import WhisperoptError
from ..metrics.hardware import threads_or_default
from ..recipes.base import DecodeOptions, Recipe, Runtime, WindowOptions, WindowResult
from .clips import ClipDecoding
from .guards import cut_loops, find_loop, skip_hallucinations
from .options import PLAIN_MODE, TranscribeOptions, TranscriptionInfo
from .result import Segment, TranscriptResult
from .segments import (
    Vocabulary,
    compression_ratio,
    group_words,
    resolve_language,
    single_timestamp_ending,
    split_window,
)
from .source import WindowBuffer, audio_blocks, stated_duration
from .tails import decode_to_end
from .vad import speech_segments


@dataclass
class Transcriber(ClipDecoding):
    """A loaded recipe plus the checkpoint's tokenizer: call ``transcribe`` on as many inputs as you like."""

    runtime: Runtime
    model_dir: Path
    recipe: str = ""
    vocab: Vocabulary = field(init=False)
    #: what ``transcribe_clips`` with ``pack`` did so far: clips, windows decoded, clips packed with others, clips
    #: decoded again alone (``alone``, and by reason: ``alone: <packing.REDECODE reason>``)
    packing: Counter = field(init=False, default_factory=Counter)

    def __post_init__(self):
        from ..models.processor import load_tokenizer

        self.vocab = Vocabulary.from_model_dir(self.model_dir)
        self.tokenizer = load_tokenizer(self.model_dir)

    @classmethod
    def load(cls, model: str, recipe: str | Recipe | None = None, device: str = "cpu", threads: int | None = None,
             recipe_options: dict | None = None, verify: bool = False,
             log: Callable[[str], None] | None = None) -> Transcriber:
        """Resolve ``model`` (hub id, size, directory, .pt, synthetic:<size> or a ``whisperopt export`` directory),
        build or reuse ``recipe`` (a name or a registry ``Recipe``; None: the baseline, or an exported directory's
        own recipe), load it. A cached artifact whose files no longer match their recorded sizes (with ``verify``:
        sha256 digests) is rebuilt, said through ``log``; an exported one is used as it is, never rebuilt."""
        from ..models import resolve_model
        from ..recipes import model_recipe
        from ..recipes.artifacts import build_artifact
        from ..recipes.exported import exported_artifact

        r = recipe if isinstance(recipe, Recipe) else model_recipe(model, recipe)
        reason = r.unavailable_reason(device)
        if reason:
            raise WhisperoptError(f"recipe {r.name} cannot run here: {reason}")
        resolved = resolve_model(model)
        if resolved.exported:
            r, artifact = exported_artifact(resolved.path, r, recipe_options, verify=verify)
        else:
            artifact, _ = build_artifact(r, resolved.path, r.resolve_options(recipe_options), verify=verify, log=log)
        window = str(artifact.options.get("window", WINDOW_FULL))
        if window != WINDOW_FULL and not resolved.exported:
            raise WhisperoptError(f"{r.name} option window={window}: transcription keeps full 30-s windows (seeking "
                                  "and timestamps are defined on them); the adaptive window is for short clips in "
                                  "`whisperopt bench`")
        runtime = r.open(artifact, device, threads_or_default(threads))
        if window != WINDOW_FULL:  # an export of a windowed bench row: the same weights, decoded on full windows
            runtime.window = WINDOW_FULL
            (log or (lambda m: None))(f"{r.name} was benchmarked with window={window}; transcription decodes full "
                                      "30-s windows (seeking and timestamps are defined on them)")
        return cls(runtime, resolved.path, r.name)

    def close(self) -> None:
        self.runtime.close()

    # --- public API ---
    def transcribe(self, audio, options: TranscribeOptions | None = None,
                   progress: Callable[[float], None] | None = None, **overrides) -> TranscriptResult:
        """Transcribe a path, ``-`` (stdin), a 16 kHz mono array or an iterable of such blocks."""
        segments, info = self.stream(audio, options, progress, **overrides)
        segments = list(segments)
        return TranscriptResult(segments, info.language, info.language_probability, info.duration, info.vad)

    def stream(self, audio, options: TranscribeOptions | None = None,
               progress: Callable[[float], None] | None = None,
               **overrides) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """``(segments, info)`` like faster-whisper's ``WhisperModel.transcribe``: a generator that decodes as it is
        read, and a ``TranscriptionInfo`` (the language is detected before this returns). ``overrides`` replace
        fields of ``options`` (default ``TranscribeOptions()``); ``progress`` gets the seconds of audio done."""
        opts = replace(options or TranscribeOptions(), **overrides)
        language = self.check(opts)
        info = TranscriptionInfo(language, 1.0 if language else None, stated_duration(audio),
                                 transcription_options=opts)
        blocks, name = audio_blocks(audio)
        if opts.vad_filter:  # Silero's speech chunks instead of 30-s windows (vad.py)
            return speech_segments(self, blocks, name, opts, info, progress or (lambda seconds: None)), info
        buffer = WindowBuffer(blocks)
        start = 0 if language else self._detect_language(buffer, opts, info)
        return self._generate(buffer, start, name, opts, info, progress or (lambda seconds: None)), info

    def _generate(self, buffer: WindowBuffer, start: int, name: str, opts: TranscribeOptions, info: TranscriptionInfo,
                  progress: Callable[[float], None]) -> Iterator[Segment]:
        run = {"sequential": self._sequential, "batched": self._batched, "plain": self._plain}[opts.mode]
        if start:
            progress(start / SAMPLE_RATE)  # the silence skipped while detecting the language
        yield from run(buffer, start, opts, info, progress)
        info.duration = buffer.total / SAMPLE_RATE
        if buffer.total == 0:
            raise WhisperoptError(f"no audio samples in {name} (zero-length audio)")

    def _detect_language(self, buffer: WindowBuffer, opts: TranscribeOptions, info: TranscriptionInfo) -> int:
        """Detect the language from the first non-silent window; return where decoding starts (in samples): the
        silent windows before it are done (every mode skips them undecoded)."""
        start = 0
        while True:
            window = buffer.window(start, N_SAMPLES)
            step = len(window) if opts.mode == "plain" else len(window) // HOP_LENGTH * HOP_LENGTH
            if step == 0:  # the end (the modes' own end test)
                return start
            if not self._silent(window, opts):
                self._ensure_language(window, info)
                return start
            start += step

    def check(self, opts: TranscribeOptions) -> str | None:
        """Validate ``opts`` for this recipe and checkpoint; return the language code (None: detect)."""
        name = self.recipe or type(self.runtime).__name__
        if opts.pack and self.runtime.long_form_unsupported:  # said before --mode plain's own refusal of --pack
            raise WhisperoptError(f"recipe {name} cannot --pack (packed windows are split by timestamp tokens): "
                                  f"{self.runtime.long_form_unsupported}")
        opts.check()
        language = resolve_language(opts.language, self.vocab)
        if opts.task == "translate" and not self.vocab.multilingual:
            raise WhisperoptError("--task translate needs a multilingual checkpoint (this one is English-only)")
        if opts.mode != "plain" and self.runtime.long_form_unsupported:
            raise WhisperoptError(f"recipe {name} cannot run --mode {opts.mode}: "
                                  f"{self.runtime.long_form_unsupported}; use {PLAIN_MODE}")
        if opts.word_timestamps and (opts.mode == "plain" or self.runtime.word_timestamps_unsupported):
            raise WhisperoptError(f"recipe {name} cannot give --word-timestamps: "
                                  f"{self.runtime.word_timestamps_unsupported or 'plain mode has no alignment'} "
                                  f"(the torch-* recipes can)")
        return language if self.vocab.multilingual else "en"

    # --- shared pieces ---
    def _silent(self, window: np.ndarray, opts: TranscribeOptions) -> bool:
        return len(window) == 0 or float(np.abs(window).max()) < opts.silence_threshold

    def _ensure_language(self, window: np.ndarray, info: TranscriptionInfo) -> str:
        if info.language is None:
            probs = self.runtime.language_probabilities(window)
            if not probs:
                raise WhisperoptError(f"recipe {self.recipe} cannot detect the language; pass --language")
            info.all_language_probs = sorted(probs.items(), key=lambda kv: -kv[1])
            info.language, info.language_probability = info.all_language_probs[0]
        return info.language

    def _window_options(self, opts: TranscribeOptions, language: str, temperature: float,
                        prompt: list[int]) -> WindowOptions:
        return WindowOptions(language=language if self.vocab.multilingual else None, task=opts.task,
                             timestamps=not opts.without_timestamps, temperature=temperature,
                             beam_size=opts.beam_size, best_of=opts.best_of, max_new_tokens=opts.max_new_tokens,
                             prompt=tuple(prompt), word_timestamps=opts.word_timestamps)

    def _prompt_tokens(self, opts: TranscribeOptions) -> list[int]:
        if not opts.initial_prompt:
            return []
        return self.tokenizer.encode(" " + opts.initial_prompt.strip(), add_special_tokens=False)

    def _text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(self.vocab.text_tokens(tokens))

    def _needs_fallback(self, r: WindowResult, opts: TranscribeOptions) -> bool:
        needs = False
        if opts.compression_ratio_threshold is not None and \
                compression_ratio(self._text(r.tokens)) > opts.compression_ratio_threshold:
            needs = True  # too repetitive
        if opts.logprob_threshold is not None and r.avg_logprob < opts.logprob_threshold:
            needs = True  # too unlikely
        if opts.loop_repeats and find_loop(self._text(r.tokens).split(), opts.loop_repeats):
            needs = True  # a repetition loop
        if opts.no_speech_threshold is not None and r.no_speech_prob > opts.no_speech_threshold \
                and opts.logprob_threshold is not None and r.avg_logprob < opts.logprob_threshold:
            needs = False  # silence: falling back would only make up words
        return needs

    def _decode_with_fallback(self, windows: list[np.ndarray], opts: TranscribeOptions, language: str,
                              prompt: list[int]) -> list[tuple[WindowResult, float]]:
        """Decode each window at the first temperature; re-decode only the ones that fail at the next."""
        out: list[tuple[WindowResult, float] | None] = [None] * len(windows)
        todo = list(range(len(windows)))
        for t in opts.temperature:
            results = self.runtime.decode_windows([windows[i] for i in todo],
                                                  self._window_options(opts, language, t, prompt))
            still = []
            for i, r in zip(todo, results):
                out[i] = (r, t)
                if self._needs_fallback(r, opts):
                    still.append(i)
            todo = still
            if not todo:
                break
        return out  # type: ignore[return-value]

    def _skip_as_silence(self, r: WindowResult, opts: TranscribeOptions) -> bool:
        if opts.no_speech_threshold is None or r.no_speech_prob <= opts.no_speech_threshold:
            return False
        return opts.logprob_threshold is None or r.avg_logprob < opts.logprob_threshold

    def _segments(self, r: WindowResult, t: float, offset: float, frames: int, final: bool,
                  repeats: int | None = None):
        raw, advance = split_window(r.tokens, self.vocab, offset, frames, final=final)
        return self._timed(r, t, raw, offset, repeats), raw, advance

    def _timed(self, r: WindowResult, t: float, raw: list, offset: float, repeats: int | None = None) -> list[Segment]:
        """Output segments of ``raw`` (a window's, times already ``offset`` from the window's start); ``repeats``:
        loops of that many sayings cut (``guards.cut_loops``)."""
        ratio = compression_ratio(self._text(r.tokens))
        segs = [Segment(round(s.start, 3), round(s.end, 3), self._text(s.tokens), s.tokens,
                        round(r.avg_logprob, 4), round(r.no_speech_prob, 4), t, round(ratio, 3),
                        self._words(r, s, offset) if r.token_times else None)
                for s in raw if self._text(s.tokens).strip()]
        return cut_loops(segs, repeats) if repeats else segs

    def _words(self, r: WindowResult, seg, offset: float) -> list[dict]:
        span = range(seg.index, seg.index + len(seg.tokens))
        pieces = [self.tokenizer.decode([r.tokens[i]]) if r.tokens[i] < self.vocab.eot else None for i in span]
        times = [offset + r.token_times[i] for i in range(seg.index, seg.index + len(seg.tokens) + 1)]
        probs = [r.token_probs[i] for i in span] if r.token_probs else None
        return group_words(pieces, times, seg.start, seg.end, probs)

    # --- modes ---
    def _sequential(self, buffer: WindowBuffer, start: int, opts, info, progress) -> Iterator[Segment]:
        seek = start // HOP_LENGTH  # frames
        history = self._prompt_tokens(opts)
        prompt_from = 0
        last_speech = 0.0  # where the last word kept ended (hallucination_silence_threshold)
        while True:
            window = buffer.window(seek * HOP_LENGTH, N_SAMPLES)
            frames = len(window) // HOP_LENGTH
            if frames == 0:
                break
            offset = seek * HOP_LENGTH / SAMPLE_RATE
            if self._silent(window, opts):
                seek += frames
                progress(seek * HOP_LENGTH / SAMPLE_RATE)
                continue
            language = self._ensure_language(window, info)
            prompt = history[prompt_from:] if opts.condition_on_previous_text else []
            (r, t), = self._decode_with_fallback([window], opts, language, prompt)
            if self._skip_as_silence(r, opts):
                seek += frames
                progress(seek * HOP_LENGTH / SAMPLE_RATE)
                continue
            segs, raw, advance = self._segments(r, t, offset, frames, final=False, repeats=opts.loop_repeats)
            if opts.hallucination_silence_threshold is not None:
                ending = single_timestamp_ending(r.tokens, self.vocab)
                content_end = offset + frames / FRAMES_PER_SECOND if frames * HOP_LENGTH < N_SAMPLES else None
                segs, after = skip_hallucinations(segs, opts.hallucination_silence_threshold, seek, frames, advance,
                                                  ending, last_speech, content_end)
                raw = [s for s in raw if any(s.tokens == k.tokens for k in segs)]
                last_speech = next((w["end"] for k in reversed(segs) for w in reversed(k.words or [])), last_speech)
                advance = after - seek
            for s in raw:
                history.extend(s.tokens)
            if not opts.condition_on_previous_text or t > 0.5:
                prompt_from = len(history)  # a high temperature's output is not a context worth keeping
            seek += advance
            yield from segs
            progress(seek * HOP_LENGTH / SAMPLE_RATE)

    def _batched(self, buffer: WindowBuffer, start: int, opts, info, progress) -> Iterator[Segment]:
        done = False  # start: samples
        while not done:
            batch: list[tuple[float, int, np.ndarray]] = []
            while len(batch) < opts.batch_size:
                window = buffer.window(start, N_SAMPLES)
                frames = len(window) // HOP_LENGTH
                if frames == 0:
                    done = True
                    break
                if not self._silent(window, opts):
                    batch.append((start / SAMPLE_RATE, frames, window.copy()))
                start += frames * HOP_LENGTH
            if batch:
                language = self._ensure_language(batch[0][2], info)
                for segs in decode_to_end(self, [(offset, w) for offset, _, w in batch], opts, language):
                    yield from segs
            progress(start / SAMPLE_RATE)

    def _plain(self, buffer: WindowBuffer, start: int, opts, info, progress) -> Iterator[Segment]:
        done = False
        while not done:
            batch: list[tuple[float, np.ndarray]] = []
            while len(batch) < opts.batch_size:
                window = buffer.window(start, N_SAMPLES)
                if len(window) == 0:
                    done = True
                    break
                if not self._silent(window, opts):
                    batch.append((start / SAMPLE_RATE, window.copy()))
                start += len(window)
            if batch:
                language = self._ensure_language(batch[0][1], info) if self.vocab.multilingual else "en"
                options = DecodeOptions(beam_size=opts.beam_size, language=language, task=opts.task,
                                        batch_size=len(batch))
                for (offset, window), tr in zip(batch, self.runtime.transcribe([w for _, w in batch], options)):
                    if tr.text.strip():
                        yield Segment(round(offset, 3), round(offset + len(window) / SAMPLE_RATE, 3), tr.text,
                                      list(tr.tokens))
            progress(start / SAMPLE_RATE)


def transcribe(audio, model: str, recipe: str | Recipe | None = None, options: TranscribeOptions | None = None,
               device: str = "cpu", threads: int | None = None, recipe_options: dict | None = None,
               **overrides) -> TranscriptResult:
    """Load ``recipe`` (None: the baseline) of ``model`` and transcribe ``audio`` (path, ``-``, array or blocks) — see
    TranscribeOptions; the README's "As a library" shows it with ``Transcriber.stream``.

    >>> result = transcribe("talk.mp3", model="tiny.en", language=None)
    >>> result.language, result.segments[0].start, result.text
    """
    transcriber = Transcriber.load(model, recipe, device=device, threads=threads, recipe_options=recipe_options)
    try:
        return transcriber.transcribe(audio, options, **overrides)
    finally:
        transcriber.close()
