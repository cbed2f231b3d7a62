"""The ONNX Runtime recipes' runtime: Optimum's ORTModelForSpeechSeq2Seq under transformers' generate, plus the
encoder and teacher-forced probes run on the same sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.features import FRONT_END
from ..errors import WhisperoptError
from .onnx_tools import NP_TYPES, decoder_dims, decoder_feed, session_options, takes_short_windows
from .transformers_runtime import GenerateRuntime


class OrtRuntime(GenerateRuntime):
    """Optimum's ORTModelForSpeechSeq2Seq under transformers' generate, plus encoder / teacher-forced probes."""

    fidelity_method = ("encoder session output; merged decoder teacher-forced through its KV-cache branch (first "
                       "token without cache, then one token per step)")

    def __init__(self, model, model_dir: Path, device: str, session_info: dict):
        import torch

        super().__init__(model, model_dir, device=device, dtype=torch.float32 if device == "cuda" else None)
        self.torch_for_glue_only()
        self.session_info = {**session_info, "torch_threads": "1 (glue only: the sessions own --threads)"}
        _, self.heads, self.head_dim = decoder_dims(model_dir)
        self.encoder_session = model.encoder.session
        self.decoder_session = model.decoder.session
        enc_in = self.encoder_session.get_inputs()[0]
        self._enc_name, self._enc_dtype = enc_in.name, NP_TYPES.get(enc_in.type, np.float32)

    def _encode(self, features: np.ndarray) -> np.ndarray:
        out = self.encoder_session.run(["last_hidden_state"], {self._enc_name: features.astype(self._enc_dtype)})
        return out[0]

    def encoder_output(self, features: np.ndarray) -> np.ndarray:
        return self._encode(features).astype(np.float32)

    def encode_window(self, feats):
        """The encoder session on the adaptive window's frames (an export whose frame axis is symbolic)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        if not takes_short_windows(self.encoder_session):
            raise WhisperoptError("this ONNX artifact's encoder takes exactly 3000 frames (exported by an older "
                                  "whisperopt): rebuild it (`whisperopt build --rebuild`) to use the window option")
        hidden = torch.from_numpy(self._encode(feats.cpu().numpy()))
        return BaseModelOutput(last_hidden_state=hidden.to(self.device, dtype=self.dtype or hidden.dtype))

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray:
        """Teacher forcing through the path generation takes: the first token on the no-cache branch, then one token
        per step on the KV-cache branch (so a broken cache fails the check as well as broken weights)."""
        enc = self._encode(features)
        sess = self.decoder_session
        names = [o.name for o in sess.get_outputs()]
        ids = np.asarray([tokens], dtype=np.int64)
        past, top1 = None, []
        for i in range(ids.shape[1]):
            feed = decoder_feed(sess, ids[:, i:i + 1], enc, self.heads, self.head_dim, past=past)
            outs = dict(zip(names, sess.run(None, feed)))
            top1.append(int(np.asarray(outs["logits"])[0, -1].argmax()))
            present = {k.replace("present.", "past_key_values."): v for k, v in outs.items()
                       if k.startswith("present.")}
            if past is None:
                past = present
            else:  # the cache branch returns the grown self-attention cache; cross-attention keys stay as computed
                past = {k: (present[k] if ".decoder." in k else past[k]) for k in past}
        return np.asarray(top1)

    def run_info(self) -> dict:
        return {"decode_settings": {"loop": "python (transformers generate, Optimum ORTModelForSpeechSeq2Seq)",
                                    **self.session_info, "front_end": "shared " + FRONT_END}}

    def close(self) -> None:
        self.model = None
        self.encoder_session = self.decoder_session = None


def load_ort_model(directory: Path, device: str, threads: int, level: str):
    """(ORTModelForSpeechSeq2Seq, session info) for an artifact directory."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSpeechSeq2Seq

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise WhisperoptError("onnxruntime has no CUDA execution provider here (install onnxruntime-gpu)")
        provider, io_binding = "CUDAExecutionProvider", True
    else:
        provider, io_binding = "CPUExecutionProvider", False
    model = ORTModelForSpeechSeq2Seq.from_pretrained(
        str(directory), provider=provider, session_options=session_options(threads, level),
        use_io_binding=io_binding, use_cache=True, use_merged=True, local_files_only=True)
    info = {"provider": provider, "io_binding": io_binding, "graph_optimization": level,
            "intra_op_num_threads": threads, "merged_decoder": bool(model.decoder.is_merged)}
    return model, info
