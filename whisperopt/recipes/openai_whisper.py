"""openai-whisper: OpenAI's reference implementation, the one most users start from (``pip install openai-whisper``).

Build: the resolved checkpoint (synthetic included) is written in openai-whisper's own ``.pt`` format,
``{"dims": ModelDimensions fields, "model_state_dict": ...}`` in float32 (``models.openai_checkpoint``: the inverse of
the .pt -> transformers conversion), which ``whisper.load_model(path)`` reads like a downloaded checkpoint.

Run: ``whisper.decode`` (its ``DecodingTask``) on openai-whisper's own front end, ``log_mel_spectrogram(pad_or_trim
(audio))`` (the reference front end that transformers' ``WhisperFeatureExtractor`` reproduces), over the runner's
whole batch in one call (with a beam, one call per utterance: openai-whisper's batched beam search fails,
openai/whisper#2197): greedy (``beam_size=None``) or beam search with the runner's beam size, temperature 0 only (no
fallback: that lives in ``whisper.transcribe``), fixed language and task, ``without_timestamps=True``, openai's
default suppression (``suppress_tokens="-1"`` plus the special tokens, ``suppress_blank``), ``fp16=False`` (float32
on every device: this is the fp32 recipe), ``sample_len`` = the runner's ``max_new_tokens`` (default: the decoder's
positions less the prompt, as torch-fp32).

Forced decode length (synthetic checkpoints): openai-whisper has no minimum length, but ``DecodingTask`` takes
logit filters; ``_ForcedLength`` suppresses end-of-text and every special token (timestamps included) until an item
has decoded its ``n`` tokens and then allows only end-of-text, with ``sample_len = max(n)``: each item decodes exactly
its ``n`` tokens (checked), the batch runs to its longest (as torch-fp32 does with ``--batch-size``).

Long-form (``whisperopt transcribe``): ``decode_windows`` is one ``whisper.decode`` call with timestamps, prompt,
temperature/best-of or beam size; ``DecodingResult`` carries the tokens, ``avg_logprob`` (sum / (len + 1), the
runtime contract's definition) and ``no_speech_prob``. At temperature > 0 openai-whisper ranks its ``best_of``
samples by sum / len (its ranker), not sum / (len + 1).
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

from ..constants import N_SAMPLES, N_TEXT_CTX, prompt_length
from ..data.features import audio_frames
from ..errors import WhisperoptError, first_line
from ..files import dist_version
from .base import Artifact, DecodeOptions, Recipe, Runtime, Transcription, WindowOptions, WindowResult

WEIGHTS_FILE = "model.pt"
FRONT_END = "openai-whisper log_mel_spectrogram(pad_or_trim(audio)) (the reference front end; torch STFT)"


def _forced_length_filter(lengths: list[int], n_group: int, sample_begin: int, eot: int):
    """A ``whisper.decoding.LogitFilter`` that makes row ``k`` decode exactly ``lengths[k]`` tokens."""
    import torch
    from whisper.decoding import LogitFilter

    class _ForcedLength(LogitFilter):
        def __init__(self):
            # DecodingTask repeats every audio n_group times (beams), audio-major; beam search keeps that order
            self.lengths = torch.tensor(lengths).repeat_interleave(n_group)

        def apply(self, logits, tokens):
            done = tokens.shape[1] - sample_begin
            short = (self.lengths > done).to(logits.device)
            logits[short, eot:] = -np.inf  # end-of-text and every special token, timestamps included
            full = ~short
            if bool(full.any()):
                logits[full] = -np.inf
                logits[full, eot] = 0.0

    return _ForcedLength()


class OpenAIWhisperRuntime(Runtime):
    fidelity_method = ("openai-whisper's own Whisper module: model.embed_audio (encoder) output; "
                       "model.logits(tokens, audio_features) (decoder, full sequence, no KV cache) argmax")
    long_form_unsupported = None

    def __init__(self, recipe: OpenAIWhisperRecipe, artifact: Artifact, device: str, threads: int):
        import torch
        import whisper

        self.recipe = recipe
        self.device = device
        self.threads = threads
        torch.set_num_threads(threads)
        path = Path(artifact.weights_dir) / WEIGHTS_FILE
        if not path.is_file():
            raise WhisperoptError(f"{recipe.name} artifact incomplete: {path} missing; rebuild it")
        try:
            self.model = whisper.load_model(str(path), device=device).eval()
        except Exception as exc:  # noqa: BLE001 - torch.load / load_state_dict errors of a damaged file
            raise WhisperoptError(f"{recipe.name}: openai-whisper cannot load {path}: "
                                  f"{first_line(exc, type(exc).__name__)}") from None
        self.multilingual = bool(self.model.is_multilingual)
        self.n_mels = int(self.model.dims.n_mels)
        self.fp16 = False  # the fp32 recipe, on CPU and CUDA alike
        self.settings: dict | None = None
        self.forcing_checked = 0

    # --- front end ---
    def _mel(self, audios: list[np.ndarray]):
        import torch
        import whisper

        mels = [whisper.log_mel_spectrogram(
            whisper.pad_or_trim(torch.from_numpy(np.ascontiguousarray(a[:N_SAMPLES], dtype=np.float32))),
            n_mels=self.n_mels, device=self.device) for a in audios]
        return torch.stack(mels)

    def _language(self, language: str | None) -> str | None:
        # English-only checkpoints have no language token; openai-whisper would try to detect one when given None
        return language if self.multilingual else "en"

    # --- the benchmark's batches ---
    def _options(self, options: DecodeOptions, n: int | None):
        from whisper import DecodingOptions

        limit = N_TEXT_CTX - prompt_length(self.multilingual)  # positions after <|sot|>[<|lang|><|task|>]<|notimest.|>
        if n is not None:
            if n > limit:
                raise WhisperoptError(f"{self.recipe.name}: cannot force {n} decode steps: the decoder has "
                                      f"{limit} positions after the prompt")
            sample_len = n
        else:
            sample_len = min(options.max_new_tokens or limit, limit)
        return DecodingOptions(task=options.task, language=self._language(options.language), temperature=0.0,
                               sample_len=sample_len, beam_size=None if options.beam_size == 1 else options.beam_size,
                               suppress_tokens="-1", suppress_blank=True, without_timestamps=True, fp16=self.fp16)

    def _record(self, opts, options: DecodeOptions, forced: bool) -> None:
        if self.settings is not None:
            return
        import torch

        self.settings = {
            "engine": f"openai-whisper {dist_version('openai-whisper')} / torch {dist_version('torch')}",
            "api": "whisper.decode (DecodingTask.run) over the runner's batch, one 30-s window per utterance",
            "device": self.device,
            "fp16": opts.fp16,
            "front_end": FRONT_END,
            "torch_threads": torch.get_num_threads(),
            "beam_size": opts.beam_size if opts.beam_size is not None else "None (greedy)",
            "temperature": [opts.temperature],
            "language": opts.language,
            "task": opts.task,
            "without_timestamps": opts.without_timestamps,
            "suppress_tokens": "-1 (openai's non-speech tokens) + task/sot/sot_prev/sot_lm/no_speech",
            "suppress_blank": opts.suppress_blank,
            "sample_len": ("max(n) of the batch, end-of-text and special tokens suppressed until each item's n "
                           "(exactly n decoded, checked)") if forced else opts.sample_len,
            "batching": ("one decode call per utterance (batched beam search fails in openai-whisper, "
                         "openai/whisper#2197)") if opts.beam_size else "the runner's batch in one decode call",
        }
        if options.language != opts.language:
            self.settings["language_note"] = f"runner asked {options.language!r}; English-only checkpoint: 'en'"

    def transcribe(self, audios, options, forced_lengths=None):
        import torch
        from whisper.decoding import DecodingTask

        n = max(forced_lengths) if forced_lengths else None
        opts = self._options(options, n)
        self._record(opts, options, forced_lengths is not None)
        frames = audio_frames(audios, self.window)
        mel = self._mel(audios)[..., :frames]
        # openai-whisper's batched beam search fails (cross-attention of n_group x batch queries against batch keys,
        # openai/whisper#2197): with a beam, one decode call per utterance
        groups = [[i] for i in range(len(audios))] if opts.beam_size else [list(range(len(audios)))]
        results = []
        encoder, full = self.model.encoder, self.model.encoder.positional_embedding
        try:  # the adaptive window: AudioEncoder asserts and adds its whole table, so it is shown the first rows
            encoder.positional_embedding = full[:frames // 2]
            with torch.inference_mode():
                for idx in groups:
                    task = DecodingTask(self.model, opts)
                    if forced_lengths:
                        task.logit_filters.append(_forced_length_filter([forced_lengths[i] for i in idx], task.n_group,
                                                                        task.sample_begin, task.tokenizer.eot))
                    results += task.run(mel[idx])
        finally:
            encoder.positional_embedding = full
        out = [Transcription(r.text.strip(), [int(t) for t in r.tokens]) for r in results]
        if forced_lengths:
            got = [len(t.tokens) for t in out]
            if got != list(forced_lengths):
                raise WhisperoptError(f"{self.recipe.name}: forced decode length not met: decoded {got}, "
                                      f"forced {list(forced_lengths)}")
            self.forcing_checked += len(got)
        return out

    def run_info(self) -> dict:
        info = {"decode_settings": self.settings or {}}
        if self.forcing_checked:
            info["forced_lengths_checked"] = self.forcing_checked
        if self.device == "cpu":
            from .pytorch import torch_isa_path

            info["isa_path"] = torch_isa_path(self.model, None)  # float32 on CPU
        return info

    # --- fidelity probes ---
    def encoder_output(self, features: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            return self.model.embed_audio(x).float().cpu().numpy()

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(self.device)
        ids = torch.tensor([[int(t) for t in tokens]], device=self.device)
        with torch.inference_mode():
            logits = self.model.logits(ids, self.model.embed_audio(x))
        return logits[0].argmax(-1).cpu().numpy()

    # --- long-form windows (whisperopt.transcribe) ---
    def decode_windows(self, audios, options: WindowOptions) -> list[WindowResult]:
        import torch
        import whisper

        sample = options.temperature > 0
        opts = whisper.DecodingOptions(
            task=options.task, language=self._language(options.language), temperature=options.temperature,
            sample_len=options.max_new_tokens, best_of=max(1, options.best_of) if sample else None,
            beam_size=None if sample or options.beam_size == 1 else options.beam_size,
            prompt=list(options.prompt) or None, without_timestamps=not options.timestamps, fp16=self.fp16)
        mel = self._mel(audios)
        step = 1 if (opts.beam_size or (opts.best_of or 1) > 1) else len(audios)  # openai/whisper#2197, as above
        results = []
        with torch.inference_mode():
            for i in range(0, len(audios), step):
                results += whisper.decode(self.model, mel[i:i + step], opts)
        return [WindowResult([int(t) for t in r.tokens], float(r.avg_logprob), float(r.no_speech_prob))
                for r in results]

    def language_probabilities(self, audio: np.ndarray) -> dict[str, float]:
        import torch

        if not self.multilingual:
            return {"en": 1.0}
        with torch.inference_mode():
            _, probs = self.model.detect_language(self._mel([audio]))
        return {code: float(p) for code, p in probs[0].items()}

    def close(self) -> None:
        self.model = None
        gc.collect()


class OpenAIWhisperRecipe(Recipe):
    name = "openai-whisper-fp32"
    engine = "openai-whisper"
    description = ("openai-whisper (OpenAI's reference implementation) in float32: whisper.load_model on the "
                   "checkpoint written as its .pt, whisper.decode over the runner's batch")
    modules = ("whisper",)  # openai-whisper is installed with --no-deps (its triton requirement pulls CUDA wheels)
    devices = ("cpu", "cuda")
    # float32 like torch-fp32, same weights, its own PyTorch modules (SDPA attention): measured on synthetic:tiny
    # (random weights), 2 dev-clean utterances: encoder rel. error ~1e-6, teacher-forced agreement 100 %
    fidelity_floor = 0.999
    window_unsupported = None  # AudioEncoder shown a sliced positional table (OpenAIWhisperRuntime.transcribe)

    def unavailable_reason(self, device: str) -> str | None:
        reason = super().unavailable_reason(device)
        if reason is None and dist_version("openai-whisper") is None:
            # "whisper" is also the name of an unrelated package (Graphite's database format)
            return "engine not installed (the Python module whisper is not openai-whisper's)"
        return reason

    def versions(self) -> dict:
        return {"openai-whisper": dist_version("openai-whisper"), "torch": dist_version("torch")}

    def build(self, model_dir: Path, out_dir: Path, options: dict, base=None) -> dict:
        from ..models.openai_checkpoint import write_openai_checkpoint

        dims = write_openai_checkpoint(Path(model_dir), Path(out_dir) / WEIGHTS_FILE)
        return {"weights_file": WEIGHTS_FILE, "format": "openai-whisper .pt (dims + model_state_dict), float32",
                "dims": dims}

    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        return OpenAIWhisperRuntime(self, artifact, device, threads)


RECIPES = [OpenAIWhisperRecipe()]
