"""The onnxruntime-genai recipes' runtime: ``og.Model`` / ``og.Generator`` on the builder's encoder + decoder ONNX
(C++ decode loop and C++ log-mel front end), plus the fidelity probes.

* transcribe: each 16 kHz array (≤ 30 s) is handed to genai's ``MultiModalProcessor`` as an in-memory IEEE-float WAV
  (``og.Audios.open_bytes``: no temporary file, no int16 rounding); the decoder prompt is the one every runtime uses
  (``models.processor.decoder_prompt``: <|startoftranscript|>[<|lang|><|task|>]<|notimestamps|>) and is checked
  against the ``input_ids`` the processor returns. Greedy (``do_sample=False``, ``num_beams`` = beam size); a batch
  of utterances runs as one generator batch. ``max_length`` counts the prompt, so it is prompt + max new tokens.
* forced lengths (synthetic checkpoints): ``min_length = max_length = prompt + n`` (genai masks end-of-text below
  ``min_length``); the generated count is checked against ``n`` and a mismatch fails the run.
* probes: teacher forcing runs through genai itself (the shared log-mel features fed as ``audio_features``, then one
  ``append_tokens`` per reference token, ``get_logits`` after each); genai exposes no encoder output, so
  ``encoder_output`` runs the artifact's ``encoder.onnx`` through plain onnxruntime.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np

from ..constants import N_SAMPLES, N_TEXT_CTX, SAMPLE_RATE, prompt_length
from ..errors import WhisperoptError, described
from ..models.processor import decoder_prompt, load_tokenizer
from .base import DecodeOptions, Runtime, Transcription

FIDELITY_METHOD = ("teacher-forced logits from onnxruntime-genai's own Generator (shared log-mel features as "
                   "audio_features, one append_tokens per token); encoder output from encoder.onnx through plain "
                   "onnxruntime (genai does not expose it)")


def wav_bytes(audio: np.ndarray) -> bytes:
    """A mono 16 kHz IEEE-float32 WAV file in memory (what ``og.Audios.open_bytes`` decodes)."""
    data = np.ascontiguousarray(audio, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, SAMPLE_RATE, SAMPLE_RATE * 4, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT, mono
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt "
            + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def session_overlay(threads: int) -> str:
    """genai config overlay: ``threads`` intra-op threads (one inter-op) for the encoder and decoder sessions."""
    opts = {"session_options": {"intra_op_num_threads": int(threads), "inter_op_num_threads": 1}}
    return json.dumps({"model": {"encoder": opts, "decoder": opts}})


class GenAIRuntime(Runtime):
    """``onnxruntime_genai`` Model + Generator over an artifact directory (genai_config.json, encoder/decoder ONNX)."""

    fidelity_method = FIDELITY_METHOD

    def __init__(self, artifact_dir: Path, model_dir: Path, threads: int):
        import onnxruntime_genai as og

        self.og = og
        self.dir, self.model_dir, self.threads = Path(artifact_dir), Path(model_dir), int(threads)
        config = og.Config(str(self.dir))
        config.clear_providers()  # CPU
        config.overlay(session_overlay(self.threads))
        try:
            self.model = og.Model(config)
        except Exception as exc:  # noqa: BLE001 - genai raises RuntimeError / OrtException with multi-line text
            raise WhisperoptError(f"onnxruntime-genai could not load {self.dir}: {described(exc)}") from None
        self.processor = self.model.create_multimodal_processor()
        self.tokenizer = load_tokenizer(model_dir)
        gen = json.loads((self.model_dir / "generation_config.json").read_text())
        self.multilingual = bool(gen.get("is_multilingual", True))
        self.eos = int(self.tokenizer.eos_token_id)
        self.special = set(self.tokenizer.all_special_ids)
        self.forced_checked = 0
        self.truncated = 0
        self.calls: list[dict[str, list[float]]] = []
        self._encoder = None

    # --- decoding ---
    def _inputs(self, audios: list[np.ndarray], prompt: list[int]):
        text = self.tokenizer.decode(prompt, skip_special_tokens=False)
        inputs = self.processor([text] * len(audios), audios=self.og.Audios.open_bytes(*[wav_bytes(a) for a in audios]))
        ids = np.asarray(inputs["input_ids"].as_numpy())
        if ids.shape != (len(audios), len(prompt)) or (ids != np.asarray(prompt)).any():
            raise WhisperoptError(f"onnxruntime-genai's processor tokenised the decoder prompt {text!r} as "
                                  f"{ids.tolist()[0]}, expected {prompt}")
        return inputs

    def _generate(self, audios: list[np.ndarray], prompt: list[int], options: DecodeOptions, max_new: int,
                  min_new: int, call: dict) -> list[list[int]]:
        params = self.og.GeneratorParams(self.model)
        p = len(prompt)
        search = {"do_sample": False, "num_beams": options.beam_size, "num_return_sequences": 1,
                  "batch_size": len(audios), "max_length": p + max_new}
        if min_new:
            search["min_length"] = p + min_new
        params.set_search_options(**search)
        generator = self.og.Generator(self.model, params)
        try:
            t0 = time.perf_counter()
            inputs = self._inputs(audios, prompt)
            t1 = time.perf_counter()
            generator.set_inputs(inputs)  # runs the encoder
            t = time.perf_counter()
            call["front_end"].append(t1 - t0)
            call["encoder"].append(t - t1)
            first = True
            while not generator.is_done():
                generator.generate_next_token()
                now = time.perf_counter()
                call["first" if first else "step"].append(now - t)
                t, first = now, False
            out = []
            for i in range(len(audios)):
                seq = [int(x) for x in generator.get_sequence(i)][p:]
                out.append(seq[:seq.index(self.eos)] if self.eos in seq else seq)
            return out
        except WhisperoptError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise WhisperoptError(f"onnxruntime-genai generate failed: {described(exc)}") from None
        finally:
            del generator

    def transcribe(self, audios, options: DecodeOptions, forced_lengths=None):
        prompt = decoder_prompt(self.tokenizer, options.language, options.task, self.multilingual)
        limit = N_TEXT_CTX - prompt_length(self.multilingual)
        clipped = []
        for audio in audios:
            audio = np.asarray(audio, dtype=np.float32)
            if len(audio) > N_SAMPLES:  # one 30-s window per utterance, as the HF feature extractor does
                audio = audio[:N_SAMPLES]
                self.truncated += 1
            clipped.append(audio)
        call = {"front_end": [], "encoder": [], "first": [], "step": []}
        self.calls.append(call)
        if forced_lengths:  # one generator per item: min/max length are per generator
            results = []
            for audio, n in zip(clipped, forced_lengths):
                n = min(int(n), limit)
                tokens = self._generate([audio], prompt, options, n, n, call)[0]
                if len(tokens) != n:
                    raise WhisperoptError(f"onnxruntime-genai decoded {len(tokens)} tokens where {n} were forced: "
                                          "rows would not be comparable")
                self.forced_checked += 1
                results.append(tokens)
        else:
            results = self._generate(clipped, prompt, options, min(options.max_new_tokens or limit, limit), 0, call)
        return [Transcription(self.tokenizer.decode(t, skip_special_tokens=True).strip(),
                              [x for x in t if x not in self.special]) for t in results]

    # --- probes ---
    def encoder_output(self, features: np.ndarray) -> np.ndarray:
        if self._encoder is None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = self.threads, 1
            self._encoder = ort.InferenceSession(str(self.dir / "encoder.onnx"), so, providers=["CPUExecutionProvider"])
        out = self._encoder.run(["hidden_states"], {"audio_features": np.asarray(features, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32)

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray:
        """argmax at every position of ``tokens``: <|startoftranscript|> with the features, then one token at a time
        through genai's KV cache (the path its decode loop takes)."""
        og = self.og
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, num_beams=1, batch_size=1, max_length=N_TEXT_CTX)
        generator = og.Generator(self.model, params)
        inputs = og.NamedTensors()
        inputs["audio_features"] = np.ascontiguousarray(features, dtype=np.float32)
        inputs["input_ids"] = np.asarray([tokens[:1]], dtype=np.int32)
        generator.set_inputs(inputs)
        top1 = [int(np.asarray(generator.get_logits())[0, -1].argmax())]
        for t in tokens[1:]:
            generator.append_tokens([int(t)])
            top1.append(int(np.asarray(generator.get_logits())[0, -1].argmax()))
        del generator
        return np.asarray(top1)

    def run_info(self) -> dict:
        measured = self.calls[1:] if len(self.calls) > 1 else self.calls  # the first call is the bench's warm-up
        def median_ms(kind):
            values = [v for c in measured for v in c[kind]]
            return 1000 * float(np.median(values)) if values else None

        info = {"decode_settings": {"loop": "C++ (onnxruntime_genai Generator; Python calls generate_next_token)",
                                    "provider": "CPUExecutionProvider", "intra_op_num_threads": self.threads,
                                    "front_end": "own (onnxruntime-genai's C++ log-mel, from float32 WAV bytes)",
                                    "forcing": "min_length = max_length = prompt + n, generated count checked"},
                "component_timing_calls": len(measured),
                # per generator (a batch): front end = processor, encoder = set_inputs, then each generate_next_token
                "front_end_ms_median": median_ms("front_end"),
                "encoder_ms_median": median_ms("encoder"),
                "decoder_first_ms_median": median_ms("first"),
                "decoder_step_ms_median": median_ms("step")}
        if self.forced_checked:
            info["forced_lengths_checked"] = self.forced_checked
        if self.truncated:
            info["truncated_to_30s"] = self.truncated
        return info

    def close(self) -> None:
        self.model = self.processor = None
        self._encoder = None
