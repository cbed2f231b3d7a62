"""Many short clips (each ≤ 30 s) through one loaded recipe in as few engine calls as possible: every clip a window of
``--mode batched`` (or ``plain``), up to ``batch_size`` windows per call, or with ``pack`` several clips to a window
(``packing.py``). What a server's dynamic batching and ``transcribe --pack`` run; ``Transcriber`` (``longform.py``)
has these methods through ``ClipDecoding``, and long audio goes through its ``stream``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..constants import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE
from ..errors import WhisperoptError
from ..recipes.base import DecodeOptions
from .options import TranscribeOptions, TranscriptionInfo
from .packing import gap_samples, plan_windows
from .result import Segment, TranscriptResult
from .vad import restore_clips, speech_clips


class ClipDecoding:
    """``transcribe_clips`` for ``Transcriber``, which supplies the runtime, the vocabulary, the ``packing`` counter
    and the window decoding (``_decode_with_fallback``, ``_segments``, ``_timed``, the silence and language checks)."""

    def transcribe_clips(self, clips: list[np.ndarray], options: TranscribeOptions | None = None,
                         **overrides) -> list[TranscriptResult]:
        """Transcribe several short clips (16 kHz mono arrays, each ≤ 30 s) in as few engine calls as possible:
        every clip is one window and up to ``batch_size`` windows share one ``Runtime.decode_windows`` call (one
        ``Runtime.transcribe`` call in plain mode). This is what a server's dynamic batching runs.

        Each clip is decoded like a window of ``--mode batched`` (no seeking inside a clip, the text after the last
        timestamp ends at the clip's end); the temperature fallback re-decodes only the clips that need it; clips of a
        multilingual checkpoint without a given language are detected one by one and decoded per language. Longer
        audio goes through ``transcribe``/``stream``.

        With ``pack`` the clips of one language are packed several to a window (``packing.plan_windows``) and
        ``batch_size`` counts windows; each window's segments go back to their clips with times from the clip's own
        start (``PackedWindow.split``), and the clips whose text a packed window did not give for sure are decoded
        again alone. ``self.packing`` counts what packing did."""
        opts = replace(options or TranscribeOptions(), **overrides)
        language = self.check(opts)
        clips = [np.asarray(c, dtype=np.float32).reshape(-1) for c in clips]
        for clip in clips:
            if len(clip) > N_SAMPLES:
                raise WhisperoptError(f"a clip of {len(clip) / SAMPLE_RATE:.1f} s is longer than one 30-s window; "
                                      "transcribe it with transcribe() or stream()")
        results = [TranscriptResult([], language, 1.0 if language else None, len(c) / SAMPLE_RATE) for c in clips]
        if opts.vad_filter:  # each clip's speech only (none: an empty array, not decoded), mapped back at the end
            clips, speech = speech_clips(clips, opts)
        groups: dict[str, list[int]] = {}
        for i, clip in enumerate(clips):
            if len(clip) // HOP_LENGTH == 0 or self._silent(clip, opts):
                continue  # silence (or under one frame): an empty transcript, never decoded
            if language is None:
                info = TranscriptionInfo(None, None, None)
                self._ensure_language(clip, info)
                results[i].language, results[i].language_probability = info.language, info.language_probability
            groups.setdefault(results[i].language, []).append(i)
        prompt = self._prompt_tokens(opts)
        for lang, members in groups.items():
            if opts.pack:
                self._decode_packed(clips, members, results, opts, lang, prompt)
                continue
            for k in range(0, len(members), opts.batch_size):
                chunk = members[k:k + opts.batch_size]
                if opts.mode == "plain":
                    decode = DecodeOptions(beam_size=opts.beam_size, language=lang, task=opts.task,
                                           batch_size=len(chunk))
                    for i, tr in zip(chunk, self.runtime.transcribe([clips[i] for i in chunk], decode)):
                        if tr.text.strip():
                            results[i].segments = [Segment(0.0, round(results[i].duration, 3), tr.text,
                                                           list(tr.tokens))]
                    continue
                decoded = self._decode_with_fallback([clips[i] for i in chunk], opts, lang, prompt)
                for i, (r, t) in zip(chunk, decoded):
                    if not self._skip_as_silence(r, opts):
                        frames = len(clips[i]) // HOP_LENGTH
                        results[i].segments = self._segments(r, t, 0.0, frames, final=True,
                                                             repeats=opts.loop_repeats)[0]
        if opts.vad_filter:
            restore_clips(results, speech, opts)
        return results

    def _decode_packed(self, clips: list[np.ndarray], members: list[int], results: list[TranscriptResult],
                       opts: TranscribeOptions, language: str, prompt: list[int]) -> None:
        """``transcribe_clips`` with ``pack`` for the clips ``members`` of one language (see there)."""
        plan = plan_windows([len(clips[i]) for i in members], gap_samples(opts.pack_gap))
        group = [clips[i] for i in members]
        alone: list[int] = []  # members the packed windows did not transcribe for sure (PackedWindow.split)
        self.packing.update(clips=len(members), windows=len(plan),
                            packed=sum(len(w.members) for w in plan if w.packed))
        for k in range(0, len(plan), opts.batch_size):
            chunk = plan[k:k + opts.batch_size]
            decoded = self._decode_with_fallback([w.audio(group) for w in chunk], opts, language, prompt)
            for w, (r, t) in zip(chunk, decoded):
                if self._skip_as_silence(r, opts):
                    continue
                for j, start, piece in zip(w.members, w.starts, w.split(r.tokens, self.vocab)):
                    if isinstance(piece, str):
                        alone.append(j)
                        self.packing[f"alone: {piece}"] += 1
                    else:
                        results[members[j]].segments = self._timed(r, t, piece, -start / SAMPLE_RATE,
                                                                   opts.loop_repeats)
        self.packing["alone"] += len(alone)
        for k in range(0, len(alone), opts.batch_size):
            chunk = [members[j] for j in alone[k:k + opts.batch_size]]
            for i, (r, t) in zip(chunk, self._decode_with_fallback([clips[i] for i in chunk], opts, language,
                                                                   prompt)):
                if not self._skip_as_silence(r, opts):
                    results[i].segments = self._segments(r, t, 0.0, len(clips[i]) // HOP_LENGTH, final=True,
                                                         repeats=opts.loop_repeats)[0]
