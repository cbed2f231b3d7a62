"""A Runtime around any model with transformers' Whisper ``generate`` (PyTorch, and Optimum's ORT/OpenVINO models).

Engines whose model class is a drop-in for ``WhisperForConditionalGeneration`` reuse this; other engines
(CTranslate2, sherpa-onnx) implement ``Runtime`` themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..constants import N_FRAMES, N_TEXT_CTX, prompt_length
from ..data.features import audio_frames, log_mel
from ..models.processor import load_processor
from .base import DecodeOptions, Runtime, Transcription, WindowOptions, WindowResult


class GenerateRuntime(Runtime):
    """Runs ``model.generate`` with Whisper's decoding options; ``model`` is a transformers-compatible Whisper."""

    def __init__(self, model, model_dir: Path, device: str = "cpu", dtype=None):
        self.model = model
        self.processor = load_processor(model_dir)
        self.tokenizer = self.processor.tokenizer
        self.device = device
        self.dtype = dtype
        self.multilingual = bool(getattr(model.generation_config, "is_multilingual", True))

    @staticmethod
    def torch_for_glue_only() -> None:
        """For engines that run the network outside torch (ONNX Runtime, OpenVINO) under transformers' ``generate``:
        torch only does glue work there (logits processors: ``SuppressTokens`` runs ``torch.isin`` over the vocabulary
        ~3 times per step), and with ``--threads`` OpenMP threads those small ops spin against the engine's own
        threads on the same cores. Profiled on onnx-fp32, tiny.en, 2 cores: 13.1 s → 2.4 s per utterance."""
        import torch

        torch.set_num_threads(1)

    def features(self, audios: list[np.ndarray], frames: int = N_FRAMES):
        import torch

        feats = torch.from_numpy(log_mel(self.processor.feature_extractor, audios, frames))  # the shared front end
        if self.dtype is not None:
            feats = feats.to(self.device, dtype=self.dtype)
        return feats

    def encode_window(self, feats):
        """Encoder outputs of features shorter than 3000 frames (the ``window`` option). Engines whose encoder cannot
        take them declare ``Recipe.window_unsupported``, so this is only reached by those that override it."""
        raise NotImplementedError(f"{type(self).__name__} encodes full 30-s windows only")

    def generate_kwargs(self, options: DecodeOptions, forced_lengths: list[int] | None) -> dict:
        kwargs = {"num_beams": options.beam_size, "do_sample": False, "return_timestamps": False}
        if self.multilingual:
            kwargs.update(language=options.language, task=options.task)
        limit = N_TEXT_CTX - prompt_length(self.multilingual)
        if forced_lengths:
            n = min(max(forced_lengths), limit)
            kwargs.update(max_new_tokens=n, min_new_tokens=n)
            # random weights emit timestamp tokens despite <|notimestamps|> (a trained model does not); generate would
            # then split and re-seek segments, so the work would no longer be the n text tokens of a real run
            kwargs["suppress_tokens"] = self.timestamp_suppression()
        else:
            kwargs["max_new_tokens"] = min(options.max_new_tokens or limit, limit)
        return kwargs

    def timestamp_suppression(self) -> list[int]:
        """The checkpoint's suppress_tokens plus every timestamp token (<|0.00|> ... <|30.00|>)."""
        gen = self.model.generation_config
        begin = gen.no_timestamps_token_id + 1
        vocab = self.model.config.vocab_size
        return sorted(set(gen.suppress_tokens or []) | set(range(begin, vocab)))

    def transcribe(self, audios, options, forced_lengths=None):
        import torch

        frames = audio_frames(audios, self.window)
        feats = self.features(audios, frames)
        with torch.inference_mode():
            if frames < N_FRAMES:  # adaptive window: generate decodes against the shorter encoder output
                out = self.model.generate(encoder_outputs=self.encode_window(feats),
                                          **self.generate_kwargs(options, forced_lengths))
            else:
                out = self.model.generate(feats, **self.generate_kwargs(options, forced_lengths))
        sequences = out.sequences if hasattr(out, "sequences") else out
        special = set(self.tokenizer.all_special_ids)
        results = []
        for seq in sequences.tolist():
            tokens = [t for t in seq if t not in special]
            results.append(Transcription(self.tokenizer.decode(tokens, skip_special_tokens=True).strip(), tokens))
        return results

    # --- long-form windows (whisperopt.transcribe) ---
    long_form_unsupported = None

    def _long_form_encode(self, audios: list[np.ndarray]):
        return self.model.get_encoder()(input_features=self.features(audios), attention_mask=None)

    def _long_form_logits(self, encoder_outputs, ids):
        """Full-sequence decoder logits (no cache) for ``ids`` (1, T) against one window's encoder output."""
        return self.model(encoder_outputs=encoder_outputs, decoder_input_ids=ids, use_cache=False).logits[0].float()

    def decode_windows(self, audios: list[np.ndarray], options: WindowOptions) -> list[WindowResult]:
        """One ``generate`` call over the batch (``force_unique_generate_call``: no re-seeking inside the window),
        then one teacher-forced decoder pass per item for the log-probabilities and the no-speech probability."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        gen = self.model.generation_config
        sample = options.temperature > 0
        copies = max(1, options.best_of) if sample else 1
        with torch.inference_mode():
            hidden = self._long_form_encode(audios).last_hidden_state
            if copies > 1:
                hidden = hidden.repeat_interleave(copies, dim=0)
            enc = BaseModelOutput(last_hidden_state=hidden)
            kwargs = {"encoder_outputs": enc, "return_timestamps": options.timestamps,
                      "force_unique_generate_call": True, "return_dict_in_generate": True,
                      "num_beams": 1 if sample else options.beam_size, "temperature": options.temperature,
                      "do_sample": sample}
            if self.multilingual:
                kwargs.update(language=options.language, task=options.task)
            prompt = list(options.prompt)[-(N_TEXT_CTX // 2 - 1):]
            if prompt:
                kwargs["prompt_ids"] = torch.tensor([gen.prev_sot_token_id, *prompt], device=hidden.device)
            prefix_len = (1 + len(prompt) if prompt else 0) + (3 if self.multilingual else 1) + (not options.timestamps)
            kwargs["max_new_tokens"] = max(1, min(options.max_new_tokens, N_TEXT_CTX - prefix_len))
            if options.word_timestamps:  # cross-attention DTW over the checkpoint's alignment heads (eager attention)
                kwargs["return_token_timestamps"] = True
            out = self.model.generate(**kwargs)
            sequences = out["sequences"].cpu()
            times = out["token_timestamps"].tolist() if options.word_timestamps else None
            eot = gen.eos_token_id
            sot_index = prefix_len - (3 if self.multilingual else 1) - (not options.timestamps)
            nospeech = gen.no_timestamps_token_id - 1  # <|nocaptions|> / <|nospeech|>
            results = []
            for i, seq in enumerate(sequences.tolist()):
                generated = seq[prefix_len:]
                if eot in generated:
                    generated = generated[:generated.index(eot) + 1]
                ids = torch.tensor([seq[:prefix_len] + generated], device=hidden.device)
                one = BaseModelOutput(last_hidden_state=hidden[i:i + 1])
                logprobs = torch.log_softmax(self._long_form_logits(one, ids), dim=-1)
                targets = ids[0, prefix_len:]
                each = logprobs[prefix_len - 1:-1].gather(1, targets[:, None])[:, 0]
                total = float(each.sum()) if len(targets) else 0.0
                tokens = [t for t in generated if t != eot]
                token_times = token_probs = None
                if times is not None:
                    token_times = [float(x) for x in times[i][prefix_len:prefix_len + len(tokens) + 1]]
                    token_times += (token_times[-1:] or [0.0]) * (len(tokens) + 1 - len(token_times))
                    token_probs = each[:len(tokens)].exp().tolist()
                results.append(WindowResult(tokens, total / (len(tokens) + 1),
                                            float(logprobs[sot_index, nospeech].exp()), token_times, token_probs))
        if copies == 1:
            return results
        return [max(results[i:i + copies], key=lambda r: r.avg_logprob) for i in range(0, len(results), copies)]

    def language_probabilities(self, audio: np.ndarray) -> dict[str, float] | None:
        import torch

        gen = self.model.generation_config
        if not self.multilingual:
            return {"en": 1.0}
        codes = {tok[2:-2]: idx for tok, idx in (gen.lang_to_id or {}).items()}
        with torch.inference_mode():
            enc = self._long_form_encode([audio])
            sot = torch.tensor([[gen.decoder_start_token_id]], device=enc.last_hidden_state.device)
            logits = self._long_form_logits(enc, sot)[-1]
            probs = torch.softmax(logits[list(codes.values())], dim=-1).tolist()
        return dict(zip(codes, probs))
