"""Write whisper.cpp's legacy ggml model file from a Hugging Face Whisper directory (and read its header back).

The layout is the one whisper.cpp's ``whisper_model_load`` reads (the reference writers are its
``models/convert-h5-to-ggml.py`` / ``convert-pt-to-ggml.py``, and ``examples/quantize`` for the quantised types):

* magic ``0x67676d6c``; eleven int32 hparams (n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
  n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype), where a quantised file stores
  ``ftype + GGML_QNT_VERSION * 1000`` like the quantize tool;
* the mel filterbank: int32 n_mels, int32 201, then n_mels x 201 float32 (the shared front end's Slaney filters);
* the vocabulary: int32 count, then per token int32 length + raw bytes; the ordinary byte-level BPE tokens only
  (ids below <|endoftext|>), whisper.cpp derives the special tokens from ``n_vocab``
  (51864 English-only, 51865 multilingual, 51866 large-v3);
* each tensor: int32 n_dims, int32 name length, int32 ggml type, the dims innermost first, the name, the data.

Tensors carry openai-whisper's names (``encoder.blocks.N.attn.query.weight``; the reverse of
``openai_checkpoint``'s renames). Types follow the reference converter and the quantize tool: 1-D tensors (norms,
biases), the conv biases (stored as [n, 1]) and both positional embeddings stay float32; the conv kernels are float16
(float32 in an all-f32 file: whisper.cpp's loader expects exactly that); every other 2-D matrix, the token embedding
included, gets the file's type (float16, or a ggml block quantisation from the ``gguf`` package's numpy kernels,
which write ggml's block layout). The untied ``proj_out.weight`` is never written (whisper.cpp ties it to the token
embedding).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WhisperoptError

GGML_MAGIC = 0x67676D6C
GGML_QNT_VERSION = 2  # ggml.h: bump on quantisation format changes
GGML_QNT_VERSION_FACTOR = 1000
N_FFT_BINS = 201  # n_fft 400 -> 201 frequency bins

# file type -> (ggml_ftype stored in hparams, ggml_type of the big matrices, quantised)
# (ggml.h: GGML_FTYPE_ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7, MOSTLY_Q5_0 8, MOSTLY_Q5_1 9;
#  ggml_type: F32 0, F16 1, Q4_0 2, Q5_0 6, Q5_1 7, Q8_0 8)
FTYPES = {
    "f32": (0, 0, False),
    "f16": (1, 1, False),
    "q4_0": (2, 2, True),
    "q8_0": (7, 8, True),
    "q5_0": (8, 6, True),
    "q5_1": (9, 7, True),
}
GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1
HPARAM_NAMES = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx",
                "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")
# kept unquantised by whisper.cpp's quantize tool (and float32 in the reference converter)
KEEP_F32 = ("encoder.conv1.bias", "encoder.conv2.bias", "encoder.positional_embedding", "decoder.positional_embedding")


def ggml_name(hf_key: str) -> str:
    """The whisper.cpp (openai-whisper) name of a transformers Whisper parameter."""
    from .openai_checkpoint import _RENAMES, rename_key

    key = hf_key.removeprefix("model.")
    for old, new in reversed(_RENAMES):
        key = key.replace(new, old)
    if rename_key(key) != "model." + hf_key.removeprefix("model."):
        raise WhisperoptError(f"cannot map checkpoint tensor {hf_key!r} to a whisper.cpp name")
    return key


def _hparams(config: dict, ftype: int) -> dict:
    try:
        h = {"n_vocab": config["vocab_size"], "n_audio_ctx": config["max_source_positions"],
             "n_audio_state": config["d_model"], "n_audio_head": config["encoder_attention_heads"],
             "n_audio_layer": config["encoder_layers"], "n_text_ctx": config["max_target_positions"],
             "n_text_state": config["d_model"], "n_text_head": config["decoder_attention_heads"],
             "n_text_layer": config["decoder_layers"], "n_mels": config["num_mel_bins"], "ftype": ftype}
    except KeyError as exc:
        raise WhisperoptError(f"config.json lacks {exc.args[0]}; not a Whisper checkpoint") from None
    if config.get("model_type") not in (None, "whisper"):
        raise WhisperoptError(f"config.json describes a {config.get('model_type')!r} model, not Whisper")
    if h["n_vocab"] < 51864:
        raise WhisperoptError(f"vocab_size {h['n_vocab']} is not a Whisper vocabulary (whisper.cpp needs >= 51864)")
    return {k: int(v) for k, v in h.items()}


def _vocab_bytes(model_dir: Path, eot: int) -> list[bytes]:
    """Raw bytes of tokens 0 .. eot-1 (the byte-level BPE tokens), from the checkpoint's vocab.json."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    path = model_dir / "vocab.json"
    if not path.is_file():
        raise WhisperoptError(f"{model_dir} lacks vocab.json (the tokenizer's byte-level BPE vocabulary)")
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    out = [b""] * eot
    for text, idx in json.loads(path.read_text(encoding="utf-8")).items():
        if idx < eot:
            try:
                out[idx] = bytes(decoder[c] for c in text)
            except KeyError:
                raise WhisperoptError(f"vocab.json token {idx} ({text!r}) is not byte-level BPE") from None
    return out


def _mel_filters(model_dir: Path, n_mels: int) -> np.ndarray:
    from ..data.features import load_feature_extractor

    filters = np.asarray(load_feature_extractor(model_dir).mel_filters, dtype=np.float32).T  # (n_mels, 201)
    if filters.shape != (n_mels, N_FFT_BINS):
        raise WhisperoptError(f"mel filters of shape {filters.shape}, expected ({n_mels}, {N_FFT_BINS})")
    return np.ascontiguousarray(filters)


def _encode(name: str, data: np.ndarray, ftype: str) -> tuple[int, np.ndarray]:
    """(ggml type, bytes-like array) of one tensor in a file of type ``ftype``."""
    _, wtype, quantised = FTYPES[ftype]
    if data.ndim < 2 or name in KEEP_F32 or ftype == "f32":
        return GGML_TYPE_F32, data.astype(np.float32)
    if data.ndim == 3:  # conv kernels: whisper.cpp's vtype (f16 unless the whole file is f32)
        return GGML_TYPE_F16, data.astype(np.float16)
    if not quantised:
        return GGML_TYPE_F16, data.astype(np.float16)
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quantize

    qtype = GGMLQuantizationType(wtype)
    block = GGML_QUANT_SIZES[qtype][0]
    if data.shape[-1] % block:
        raise WhisperoptError(f"{ftype}: tensor {name} has rows of {data.shape[-1]} values, not a multiple of the "
                              f"{block}-value quantisation block")
    return wtype, quantize(data.astype(np.float32), qtype)


def convert_to_ggml(model_dir: Path, out_file: Path, ftype: str = "f16") -> dict:
    """Write ``out_file`` (whisper.cpp's ggml format) from the HF Whisper checkpoint in ``model_dir``; returns the
    hparams and tensor counts. Any unusable input is a one-line ``WhisperoptError``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if ftype not in FTYPES:
        raise WhisperoptError(f"unknown ggml file type {ftype!r} (known: {', '.join(FTYPES)})")
    model_dir, out_file = Path(model_dir), Path(out_file)
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise WhisperoptError(f"cannot read {model_dir / 'config.json'}: {exc}") from None
    ggml_ftype, _, quantised = FTYPES[ftype]
    hp = _hparams(config, ggml_ftype)
    eot = int(config.get("eos_token_id") or (50257 if hp["n_vocab"] >= 51865 else 50256))
    try:
        state = load_file(str(model_dir / "model.safetensors"))
    except (OSError, SafetensorError) as exc:
        raise WhisperoptError(f"cannot read {model_dir / 'model.safetensors'}: {exc}") from None
    vocab = _vocab_bytes(model_dir, eot)
    filters = _mel_filters(model_dir, hp["n_mels"])
    stored = dict(hp, ftype=ggml_ftype + (GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR if quantised else 0))

    types: dict[int, int] = {}
    tmp = out_file.with_name(out_file.name + ".tmp")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<I", GGML_MAGIC))
            f.write(struct.pack("<11i", *(stored[k] for k in HPARAM_NAMES)))
            f.write(struct.pack("<2i", *filters.shape))
            f.write(filters.astype("<f4").tobytes())
            f.write(struct.pack("<i", len(vocab)))
            for tok in vocab:
                f.write(struct.pack("<i", len(tok)) + tok)
            for key, value in state.items():
                if key == "proj_out.weight":  # tied to the token embedding in Whisper; whisper.cpp reuses it
                    continue
                name = ggml_name(key)
                data = np.asarray(value)
                if data.dtype.kind != "f":
                    raise WhisperoptError(f"tensor {key} has dtype {data.dtype}, expected floating point")
                if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                    data = data.reshape(data.shape[0], 1)
                shape = data.shape  # numpy order; ggml's ne[] is the reverse
                ttype, payload = _encode(name, data.astype(np.float32), ftype)
                encoded = name.encode()
                f.write(struct.pack("<3i", len(shape), len(encoded), ttype))
                f.write(struct.pack(f"<{len(shape)}i", *reversed(shape)))
                f.write(encoded)
                f.write(np.ascontiguousarray(payload).tobytes())
                types[ttype] = types.get(ttype, 0) + 1
        tmp.replace(out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return {"hparams": hp, "vocab_tokens": len(vocab), "tensors": sum(types.values()),
            "tensor_types": {str(k): v for k, v in sorted(types.items())}}


@dataclass
class GgmlHeader:
    hparams: dict  # ftype without the quantisation-version part
    qntvr: int
    mel_filters: np.ndarray
    vocab: list[bytes]
    tensors: dict[str, tuple[int, tuple[int, ...]]]  # name -> (ggml type, ggml dims innermost first)


def read_ggml(path: Path, tensors: bool = True) -> GgmlHeader:
    """Read a ggml whisper file's header, filters, vocabulary and tensor table (skipping the data)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    size_on_disk = path.stat().st_size
    with open(path, "rb") as f:
        def ints(n: int) -> tuple[int, ...]:
            raw = f.read(4 * n)
            if len(raw) != 4 * n:
                raise WhisperoptError(f"{path}: truncated ggml file")
            return struct.unpack(f"<{n}i", raw)

        (magic,) = struct.unpack("<I", f.read(4).ljust(4, b"\0"))
        if magic != GGML_MAGIC:
            raise WhisperoptError(f"{path} is not a ggml whisper model (magic {magic:#x})")
        hp = dict(zip(HPARAM_NAMES, ints(11)))
        qntvr, hp["ftype"] = divmod(hp["ftype"], GGML_QNT_VERSION_FACTOR)
        n_mel, n_fft = ints(2)
        filters = np.frombuffer(f.read(4 * n_mel * n_fft), dtype="<f4").reshape(n_mel, n_fft)
        (n_vocab,) = ints(1)
        vocab = []
        for _ in range(n_vocab):
            (n,) = ints(1)
            vocab.append(f.read(n))
        table: dict[str, tuple[int, tuple[int, ...]]] = {}
        while tensors:
            head = f.read(12)
            if not head:
                break
            if len(head) != 12:
                raise WhisperoptError(f"{path}: truncated ggml file")
            n_dims, length, ttype = struct.unpack("<3i", head)
            if not (1 <= n_dims <= 4 and 0 < length < 256):
                raise WhisperoptError(f"{path}: corrupt tensor header")
            ne = ints(n_dims)
            name = f.read(length).decode(errors="replace")
            try:
                block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
            except (ValueError, KeyError):
                raise WhisperoptError(f"{path}: tensor {name} has unknown ggml type {ttype}") from None
            f.seek(int(np.prod(ne)) // block * size, 1)
            if f.tell() > size_on_disk:
                raise WhisperoptError(f"{path}: truncated ggml file (tensor {name})")
            table[name] = (ttype, ne)
    return GgmlHeader(hp, qntvr, filters, vocab, table)
