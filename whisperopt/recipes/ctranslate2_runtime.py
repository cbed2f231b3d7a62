"""The CTranslate2 runtime behind ``recipes/ctranslate2.py``: faster-whisper's WhisperModel (sequential) and
BatchedInferencePipeline (batched), with the bench's decoding. The decoding contract (forced lengths, settings) is
described in ``ctranslate2.py``; the peer rows that run faster-whisper with its own defaults are in
``ctranslate2_peers.py``."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from ..constants import N_FRAMES, N_SAMPLES, N_TEXT_CTX, SAMPLE_RATE, prompt_length
from ..data.features import FRONT_END, audio_frames
from ..errors import WhisperoptError
from ..files import dist_version
from ..metrics.isa import kernel_path
from .base import Artifact, DecodeOptions, Runtime, Transcription

if TYPE_CHECKING:
    from .ctranslate2 import CT2Recipe


MAX_LENGTH = N_TEXT_CTX  # faster-whisper's total (prompt + new tokens) limit, the decoder's positions


def ct2_max_length(n: int, start_step: int) -> int:
    """The ``max_length`` for which ctranslate2's Whisper.generate decodes exactly ``n`` steps.

    ctranslate2 (src/models/whisper.cc) decodes ``min(max_length // 2, max_length - start_step)`` steps, where
    ``start_step`` is the number of prompt tokens before the last one (3 for <|sot|><|en|><|transcribe|><|notimestamps|>).
    """
    return max(2 * n, n + start_step)


def to_numpy(view) -> np.ndarray:
    """A ctranslate2 StorageView (any device, any float type) as a float32 numpy array."""
    import ctranslate2

    if view.device != "cpu":
        view = view.to_device(ctranslate2.Device.cpu)
    if view.dtype != ctranslate2.DataType.float32:
        view = view.to(ctranslate2.DataType.float32)
    return np.array(view)


_CPU_REPORT: list[str] = []  # ctranslate2's own CPU report; it logs it once per process, at the first model load


@contextlib.contextmanager
def ct2_cpu_report():
    """Keep ctranslate2's own CPU report (vendor and ISA flags, selected ISA, MKL or not, SGEMM and int8 GEMM
    backends), which it logs at INFO level once per process, when the first model loads: around that load its log
    level is raised to INFO and stderr (fd 2, where its C++ logger writes) captured; every line but its INFO lines is
    written back to stderr. Later loads in the process run as they are."""
    if _CPU_REPORT:
        yield
        return
    import ctranslate2

    old = ctranslate2.get_log_level()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        ctranslate2.set_log_level(logging.INFO)
        try:
            yield
        finally:
            ctranslate2.set_log_level(old)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
            info = [line.split("[info]", 1)[1].strip() for line in lines if "[ctranslate2]" in line and "[info]" in line]
            _CPU_REPORT.extend(i for i in info if i.startswith(("CPU:", "- Selected ISA", "- Use Intel MKL", "- SGEMM",
                                                                 "- GEMM_S8")))
            rest = [line for line in lines if not ("[ctranslate2]" in line and "[info]" in line)]
            if rest:
                sys.stderr.write("\n".join(rest) + "\n")


def ct2_isa_path(precision: str) -> dict:
    """The path of ctranslate2's matrix products (its GEMM backends, MKL on Intel CPUs and oneDNN elsewhere, dispatch
    to AMX / VNNI themselves), with ctranslate2's own CPU report as the engine's words."""
    report = "; ".join(s.lstrip("- ") for s in _CPU_REPORT) or "no CPU report (another model loaded first)"
    return kernel_path(precision, f"ctranslate2 {dist_version('ctranslate2')}: {report}")


class _GenerateRecorder:
    """Wraps faster-whisper's ``WhisperModel.model``: records every ``generate`` output, and with an adaptive window
    (``frames`` < 3000) gives ``encode`` only the window's first frames (faster-whisper pads every segment to 3000
    frames; ctranslate2's encoder itself takes any even number up to 3000 and slices its positional table)."""

    def __init__(self, model):
        self._model = model
        self.calls: list[list[list[int]]] = []
        self.frames = N_FRAMES

    def encode(self, features, to_cpu: bool = False):
        if self.frames < N_FRAMES and features.shape[-1] > self.frames:
            import ctranslate2

            features = ctranslate2.StorageView.from_array(
                np.ascontiguousarray(to_numpy(features)[..., :self.frames]))
        return self._model.encode(features, to_cpu=to_cpu)

    def generate(self, *args, **kwargs):
        results = self._model.generate(*args, **kwargs)
        self.calls.append([list(r.sequences_ids[0]) for r in results])
        return results

    def __getattr__(self, name):
        return getattr(self._model, name)


class _ReferenceFrontEnd:
    """faster-whisper's ``FeatureExtractor`` interface returning the bench's shared log-mel (``data/features.py``).

    faster-whisper pads the log-mel of the audio with zeros; the reference pads the audio. One ≤ 30-s window gets
    the reference features plus a copy of the last frame, because faster-whisper treats the last frame as padding
    (``content_frames = frames - 1``, and its batched pipeline drops it): the encoder then sees exactly the 3000
    reference frames. Longer audio (faster-whisper's own long-form loop) keeps its native front end.
    """

    def __init__(self, native, extractor):
        self._native = native
        self._extractor = extractor

    def __call__(self, waveform, padding=160, chunk_length=None):
        from ..data.features import log_mel

        if chunk_length is not None or len(waveform) > N_SAMPLES:
            return self._native(waveform, padding=padding, chunk_length=chunk_length)
        feats = log_mel(self._extractor, [np.asarray(waveform, dtype=np.float32)])[0]
        return np.concatenate([feats, feats[:, -1:]], axis=1)

    def __getattr__(self, name):
        return getattr(self._native, name)


class CT2Runtime(Runtime):
    fidelity_method = ("teacher-forced: ctranslate2 Whisper.generate with the reference tokens as prompt, "
                       "return_logits_vocab (no suppression)")

    def __init__(self, recipe: CT2Recipe, artifact: Artifact, device: str, threads: int):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.recipe = recipe
        self.device = device
        self.threads = threads
        self.mode = "batched" if recipe.batched else "sequential"
        self.batch_size = int(artifact.options.get("batch_size", 0))
        with ct2_cpu_report():
            self.model = WhisperModel(str(artifact.weights_dir), device=device, compute_type=recipe.compute_type,
                                      cpu_threads=threads, num_workers=1, local_files_only=True)
        from ..data.features import load_feature_extractor

        self.model.feature_extractor = _ReferenceFrontEnd(self.model.feature_extractor,
                                                          load_feature_extractor(artifact.model_dir))
        self.ct2 = self.model.model  # ctranslate2.models.Whisper
        self.recorder = _GenerateRecorder(self.ct2)
        self.model.model = self.recorder
        self.pipeline = BatchedInferencePipeline(self.model) if self.mode == "batched" else None
        tok = self.model.hf_tokenizer
        self.multilingual = bool(self.ct2.is_multilingual)
        self.sot = tok.token_to_id("<|startoftranscript|>")
        self.eot = tok.token_to_id("<|endoftext|>")
        self.no_timestamps = tok.token_to_id("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        # <|sot|>[<|lang|><|task|>]<|notimestamps|>; the last one is the first decoder input
        self.prompt_len = prompt_length(self.multilingual)
        self.settings: dict | None = None
        self.forcing_checked = 0

    # --- decoding ---
    def _kwargs(self, options: DecodeOptions, n: int | None) -> tuple[dict, dict]:
        kw = dict(
            language=options.language, task=options.task, beam_size=options.beam_size, best_of=1, patience=1.0,
            length_penalty=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0, temperature=0.0,
            compression_ratio_threshold=None, log_prob_threshold=None, no_speech_threshold=None,
            condition_on_previous_text=False, initial_prompt=None, prefix=None, hotwords=None, suppress_blank=True,
            suppress_tokens=[-1], without_timestamps=True, word_timestamps=False, vad_filter=False, multilingual=False,
        )
        start_step = self.prompt_len - 1
        notes = {}
        if n is not None:
            if ct2_max_length(n, start_step) > MAX_LENGTH:
                raise WhisperoptError(
                    f"{self.recipe.name}: cannot force {n} decode steps: faster-whisper decodes at most "
                    f"{MAX_LENGTH // 2} tokens per 30-s window (ctranslate2 caps new tokens at max_length/2)")
            kw["suppress_tokens"] = [-1, self.eot, *range(self.timestamp_begin, self.vocab_size)]
            kw["max_new_tokens"] = ct2_max_length(n, start_step) - self.prompt_len
        elif options.max_new_tokens:
            want = min(options.max_new_tokens, MAX_LENGTH - self.prompt_len)
            if ct2_max_length(want, start_step) > MAX_LENGTH:
                want = MAX_LENGTH // 2
                notes["max_new_tokens_capped"] = f"{options.max_new_tokens} -> {want} (faster-whisper limit)"
            kw["max_new_tokens"] = ct2_max_length(want, start_step) - self.prompt_len
        # else: faster-whisper's default max_length 448, i.e. at most 224 new tokens per window
        return kw, notes

    def _record_settings(self, options: DecodeOptions, kw: dict, notes: dict, forced: bool) -> None:
        if self.settings is not None:
            return
        shown = {k: v for k, v in kw.items() if k not in ("suppress_tokens", "max_new_tokens")}
        shown["temperature"] = [0.0]
        shown["suppress_tokens"] = ("[-1] (the checkpoint's suppress_tokens) + end-of-text + timestamp tokens (forcing)"
                                    if forced else "[-1] (the checkpoint's suppress_tokens)")
        if forced:
            shown["max_new_tokens"] = "max(2n, n+s) - len(prompt) for n forced steps (exactly n decoded, checked)"
        elif options.max_new_tokens:
            shown["max_new_tokens"] = f"{kw['max_new_tokens']} (= {options.max_new_tokens} decoded)"
        else:
            shown["max_new_tokens"] = f"default: at most {MAX_LENGTH // 2} decoded per window"
        self.settings = {
            "engine": f"faster-whisper {dist_version('faster-whisper')} / ctranslate2 {dist_version('ctranslate2')}",
            "api": "BatchedInferencePipeline.transcribe (clip_timestamps: one clip per utterance)"
                   if self.mode == "batched" else "WhisperModel.transcribe",
            "mode": self.mode,
            "device": self.device,
            "compute_type": self.ct2.compute_type,
            "front_end": "shared " + FRONT_END,
            "cpu_threads": self.threads,
            "inter_threads": self.ct2.num_workers,
            **shown,
            **notes,
        }
        if self.mode == "batched":
            self.settings["pipeline_batch_size"] = self.batch_size or "runner --batch-size"
        if forced:
            self.settings["forcing"] = (
                "exact per utterance" if self.mode == "sequential" else
                "every item of a pipeline batch decodes the batch's longest forced length (like torch-fp32 with "
                "--batch-size; a real ctranslate2 batch drops finished items, so this is an upper bound)")

    def _check(self, produced: list[list[int]], expected: list[int]) -> None:
        got = [len(t) for t in produced]
        if got != expected:
            raise WhisperoptError(f"{self.recipe.name}: forced decode length not met: decoded {got}, forced {expected}")
        self.forcing_checked += len(got)

    def transcribe(self, audios, options, forced_lengths=None):
        audios = [np.ascontiguousarray(a[:N_SAMPLES], dtype=np.float32) for a in audios]
        try:
            if self.mode == "sequential":
                out = []
                for i, a in enumerate(audios):
                    self.recorder.frames = audio_frames([a], self.window)
                    out.append(self._sequential(a, options, forced_lengths[i] if forced_lengths else None))
                return out
            step = self.batch_size or len(audios)
            out = []
            for i in range(0, len(audios), step):
                self.recorder.frames = audio_frames(audios[i:i + step], self.window)
                out += self._batched(audios[i:i + step], options,
                                     forced_lengths[i:i + step] if forced_lengths else None)
            return out
        finally:
            self.recorder.frames = N_FRAMES  # long-form windows and probes: full windows

    def _sequential(self, audio: np.ndarray, options: DecodeOptions, n: int | None) -> Transcription:
        kw, notes = self._kwargs(options, n)
        self._record_settings(options, kw, notes, n is not None)
        self.recorder.calls.clear()
        segments, _ = self.model.transcribe(audio, **kw)
        segments = list(segments)  # the generator does the work
        tokens = [t for call in self.recorder.calls for seq in call for t in seq]
        if n is not None:
            self._check([tokens], [n])
        return Transcription("".join(s.text for s in segments).strip(), tokens)

    def _batched(self, audios: list[np.ndarray], options: DecodeOptions, forced: list[int] | None) -> list[Transcription]:
        n = max(forced) if forced else None
        kw, notes = self._kwargs(options, n)
        self._record_settings(options, kw, notes, n is not None)
        bounds, start = [], 0
        for a in audios:
            bounds.append((start, start + len(a)))
            start += len(a)
        # +0.5 sample so that int(t * 16000) in faster-whisper recovers the exact sample index
        clips = [{"start": (s + 0.5) / SAMPLE_RATE, "end": (e + 0.5) / SAMPLE_RATE} for s, e in bounds]
        self.recorder.calls.clear()
        segments, _ = self.pipeline.transcribe(np.concatenate(audios), clip_timestamps=clips,
                                               batch_size=len(audios), **kw)
        by_seek: dict[int, list] = {}
        for seg in segments:
            by_seek.setdefault(seg.seek, []).append(seg)
        token_lists = [seq for call in self.recorder.calls for seq in call]
        if len(token_lists) != len(audios):
            raise WhisperoptError(f"{self.recipe.name}: pipeline decoded {len(token_lists)} clips for {len(audios)} utterances")
        if n is not None:
            self._check(token_lists, [n] * len(audios))
        fps = self.model.frames_per_second
        out = []
        for clip, tokens in zip(clips, token_lists):
            start = int(clip["start"] * SAMPLE_RATE)  # as faster-whisper computes each segment's seek
            segs = by_seek.get(int(start / SAMPLE_RATE * fps), [])
            out.append(Transcription("".join(seg.text for seg in segs).strip(), tokens))
        return out

    def run_info(self) -> dict:
        info = {"decode_settings": self.settings or {}}
        if self.forcing_checked:
            info["forced_lengths_checked"] = self.forcing_checked
        if self.device == "cpu":
            info["isa_path"] = ct2_isa_path(self.recipe.compute_precision)
        return info

    # --- fidelity probes ---
    def encoder_output(self, features: np.ndarray) -> np.ndarray:
        import ctranslate2

        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))
        return to_numpy(self.ct2.encode(view, to_cpu=True))

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray:
        """Engine logits for the given tokens: generate() forces a prompt's tokens after <|notimestamps|>
        one decoding step at a time and ``return_logits_vocab`` returns the logits of every step."""
        import ctranslate2

        tokens = [int(t) for t in tokens]
        idx = tokens.index(self.sot)
        while idx < len(tokens) and self.sot <= tokens[idx] <= self.no_timestamps:
            idx += 1
        start_step = idx - 1  # positions before this are fed as the prompt, without logits
        steps = len(tokens) - start_step
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))
        result = self.ct2.generate(view, [tokens], beam_size=1, max_length=ct2_max_length(steps, start_step),
                                   suppress_tokens=[], suppress_blank=False, return_logits_vocab=True)[0]
        logits = result.logits[0]
        if len(logits) < steps:
            raise WhisperoptError(f"{self.recipe.name}: teacher forcing returned {len(logits)} steps for {steps}")
        top1 = np.full(len(tokens), -1, dtype=np.int64)
        top1[start_step:] = [int(to_numpy(v).argmax()) for v in logits[:steps]]
        return top1

    # --- long-form windows (whisperopt.transcribe): ctranslate2's Whisper.generate returns timestamp tokens,
    # length-normalised scores and the no-speech probability, like faster-whisper's own transcribe loop ---
    long_form_unsupported = None

    def _long_form_encode(self, audios):
        from faster_whisper.audio import pad_or_trim

        feats = [pad_or_trim(self.model.feature_extractor(np.ascontiguousarray(a[:N_SAMPLES], dtype=np.float32)))
                 for a in audios]
        return self.model.encode(np.stack(feats))

    def decode_windows(self, audios, options):
        """One ``Whisper.generate`` call over the batch with openai-whisper's prompt layout (see Runtime)."""
        from .base import WindowResult

        tok = self.model.hf_tokenizer
        prefix = [self.sot]
        if self.multilingual:
            prefix += [tok.token_to_id(f"<|{options.language or 'en'}|>"), tok.token_to_id(f"<|{options.task}|>")]
        if not options.timestamps:
            prefix.append(self.no_timestamps)
        prompt = list(options.prompt)[-(MAX_LENGTH // 2 - 1):]
        full = ([tok.token_to_id("<|startofprev|>"), *prompt] if prompt else []) + prefix
        if options.temperature > 0:
            kw = {"beam_size": 1, "num_hypotheses": max(1, options.best_of), "sampling_topk": 0,
                  "sampling_temperature": options.temperature}
        else:
            kw = {"beam_size": options.beam_size}
        results = self.ct2.generate(
            self._long_form_encode(audios), [full] * len(audios),
            max_length=min(MAX_LENGTH, ct2_max_length(options.max_new_tokens, len(full) - 1)), return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1], max_initial_timestamp_index=50, **kw)
        out = []
        for res in results:
            # scores are length-normalised (length_penalty 1): sum = score * len; openai-whisper divides by len + 1
            candidates = [WindowResult([int(t) for t in seq], score * len(seq) / (len(seq) + 1),
                                       float(res.no_speech_prob)) for seq, score in zip(res.sequences_ids, res.scores)]
            out.append(max(candidates, key=lambda r: r.avg_logprob))
        return out

    def language_probabilities(self, audio):
        if not self.multilingual:
            return {"en": 1.0}
        return {token[2:-2]: float(p) for token, p in self.ct2.detect_language(self._long_form_encode([audio]))[0]}

    def close(self) -> None:
        self.pipeline = None
        self.model = self.ct2 = self.recorder = None
        gc.collect()
