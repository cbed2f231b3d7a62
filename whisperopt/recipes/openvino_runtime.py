"""The OpenVINO recipes' runtimes: the Python decode loop (transformers ``generate`` over optimum-intel's
``OVModelForSpeechSeq2Seq``) and the C++ one (``openvino_genai.WhisperPipeline``), both timing the encoder and
decoder calls, with fidelity probes on the artifact's IRs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..constants import N_FRAMES, N_SAMPLES, N_TEXT_CTX, prompt_length
from ..data.features import FRONT_END
from ..errors import WhisperoptError, described
from ..metrics.isa import kernel_path
from ..models.processor import load_processor
from .base import DecodeOptions, Runtime, Transcription
from .transformers_runtime import GenerateRuntime

ENCODER = "openvino_encoder_model"
DECODER = "openvino_decoder_model"
COMPONENTS = {"encoder": ENCODER, "decoder": DECODER}
FIDELITY_METHOD = ("encoder IR output; decoder IR teacher-forced through its KV-cache state (prompt in one call, "
                   "then one token per call)")


def component_bytes(ir_dir: Path) -> dict:
    """Weight bytes (``.bin``) and graph bytes (``.xml``) of the encoder and decoder IRs."""
    out = {}
    for comp, stem in COMPONENTS.items():
        bin_file, xml_file = Path(ir_dir) / f"{stem}.bin", Path(ir_dir) / f"{stem}.xml"
        if not bin_file.exists() or not xml_file.exists():
            raise WhisperoptError(f"{ir_dir}: OpenVINO IR {stem}.xml/.bin missing")
        out[comp] = {"bin_bytes": bin_file.stat().st_size, "xml_bytes": xml_file.stat().st_size}
    return out



def ov_properties(options: dict, threads: int) -> dict:
    props = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": options["performance_hint"]}
    if options["precision_hint"] != "default":
        props["INFERENCE_PRECISION_HINT"] = options["precision_hint"]
    return props


# runtime precisions of the executed graph -> metrics.isa precisions
_OV_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "u8": "int8", "i8": "int8"}
_MATRIX_LAYERS = ("FullyConnected", "MatMul", "Convolution")


def _matrix_primitives(compiled):
    from collections import Counter

    kinds, precisions = Counter(), Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in _MATRIX_LAYERS:
            kinds[info["primitiveType"].astype(str)] += 1
            precisions[info["runtimePrecision"].astype(str)] += 1
    return kinds, precisions


def ov_isa_path(compiled, example=None) -> dict:
    """What OpenVINO's CPU plugin executes for a compiled model (its encoder: the roofline's fixed part): the primitive
    types and runtime precisions of the matrix-product nodes of its runtime graph (e.g. ``brgemm_avx512_amx`` over
    bf16, ``gemm_mlas_f32``). The precision is the one most of those nodes run in (bf16 when OpenVINO's default
    picked it on an AMX / AVX512-BF16 CPU, int8 after PTQ); the path is AMX where a primitive's name says so, else
    the CPU's best non-AMX path for that precision. Nodes of a dynamic shape pick their primitive at the first
    inference (``undef`` before): a model that has not run yet runs ``example`` once."""
    compiled = compiled.get_compiled_model() if hasattr(compiled, "get_compiled_model") else compiled
    kinds, precisions = _matrix_primitives(compiled)
    if example is not None and any(k.startswith("undef") for k in kinds):
        compiled(example)
        kinds, precisions = _matrix_primitives(compiled)
    if not kinds:
        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        return kernel_path(_OV_PRECISIONS.get(hint, "fp32"), f"OpenVINO: inference precision {hint}")
    precision = _OV_PRECISIONS.get(precisions.most_common(1)[0][0], "fp32")
    amx = any("amx" in k.lower() for k in kinds)
    shown = ", ".join(f"{k} ×{n}" for k, n in kinds.most_common(4))
    return kernel_path(precision, f"OpenVINO CPU plugin primitives of the encoder's matrix products: {shown}; runtime "
                                  f"precision {', '.join(precisions)}",
                       amx=amx, isa=f"amx_{precision}" if amx and precision != "fp32" else None)


def check_device(ov_device: str) -> str:
    import openvino as ov

    available = ov.Core().available_devices
    if ov_device != "AUTO" and not any(d == ov_device or d.startswith(ov_device + ".") for d in available):
        raise WhisperoptError(f"OpenVINO device {ov_device} not present (OpenVINO sees {', '.join(available)})")
    return ov_device
class _TimedRequest:
    """Wraps an OpenVINO CompiledModel (called) or InferRequest (start_async/wait) and records each call's seconds."""

    def __init__(self, request, times: list):
        self._request = request
        self._times = times
        self._t0 = None

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        out = self._request(*args, **kwargs)
        self._times.append(time.perf_counter() - t)
        return out

    def infer(self, *args, **kwargs):
        t = time.perf_counter()
        out = self._request.infer(*args, **kwargs)
        self._times.append(time.perf_counter() - t)
        return out

    def start_async(self, *args, **kwargs):
        self._t0 = time.perf_counter()
        return self._request.start_async(*args, **kwargs)

    def wait(self, *args, **kwargs):
        out = self._request.wait(*args, **kwargs)
        if self._t0 is not None:
            self._times.append(time.perf_counter() - self._t0)
            self._t0 = None
        return out

    def __getattr__(self, name):
        return getattr(self._request, name)


class _CallLog:
    """Per-component call durations, grouped by transcribe call so the warm-up call can be left out."""

    def __init__(self):
        self.calls: list[dict[str, list[float]]] = []

    def new_call(self) -> dict[str, list[float]]:
        self.calls.append({"encoder": [], "decoder": []})
        return self.calls[-1]

    def summary(self) -> dict:
        measured = self.calls[1:] if len(self.calls) > 1 else self.calls  # first call = warm-up
        out = {"component_timing_calls": len(measured)}
        for comp in ("encoder", "decoder"):
            values = [v for c in measured for v in c[comp]]
            out[f"{comp}_calls"] = len(values)
            out[f"{comp}_ms_median"] = 1000 * float(np.median(values)) if values else None
            out[f"{comp}_ms_total"] = 1000 * float(np.sum(values)) if values else None
        first = [c["decoder"][0] for c in measured if c["decoder"]]
        rest = [v for c in measured for v in c["decoder"][1:]]
        out["decoder_first_ms_median"] = 1000 * float(np.median(first)) if first else None
        out["decoder_step_ms_median"] = 1000 * float(np.median(rest)) if rest else None
        return out


def _prop_text(value) -> str:
    if hasattr(value, "get_type_name"):  # openvino.Type
        return value.get_type_name()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def load_ov_model(ir_dir: Path, ov_device: str, props: dict):
    from optimum.intel import OVModelForSpeechSeq2Seq

    return OVModelForSpeechSeq2Seq.from_pretrained(str(ir_dir), device=ov_device, ov_config=dict(props),
                                                   export=False, compile=True, local_files_only=True)


def window_encoder(ir_dir: Path):
    """The artifact's encoder IR made to take any number of frames (the ``window`` option), or None when its graph
    does not have the expected layout. optimum-intel traces it for 3000 frames: the positional table is added as a
    constant (1, 1500, d) and the attention reshapes hold 1500 as a literal. The table is sliced to the conv
    output's length (ShapeOf → Slice), each reshape pattern's single 1500 becomes -1 (inferred), and the frame axis
    of the input is made dynamic. The IR on disk is not changed (the -genai twin runs it as built)."""
    import openvino as ov
    import openvino.opset13 as ops

    model = ov.Core().read_model(str(Path(ir_dir) / f"{ENCODER}.xml"))
    out_shape = model.outputs[0].get_partial_shape()
    if out_shape.rank.get_length() != 3 or not out_shape[1].is_static:
        return None
    positions = out_shape[1].get_length()
    table_add = None
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Add":
            a, b = op.input(0).get_partial_shape(), op.input(1).get_partial_shape()
            if b.is_static and b.rank.get_length() in (2, 3) and b[b.rank.get_length() - 2].get_length() == positions \
                    and a.rank.get_length() == 3 and a[1].is_static and a[1].get_length() == positions:
                table_add = op
                break
    if table_add is None:
        return None
    one = ops.constant(np.array([1], np.int64))
    length = ops.gather(ops.shape_of(table_add.input(0).get_source_output()), one, ops.constant(np.int64(0)))
    axis = table_add.input(1).get_partial_shape().rank.get_length() - 2
    sliced = ops.slice(table_add.input(1).get_source_output(), ops.constant(np.array([0], np.int64)), length, one,
                       ops.constant(np.array([axis], np.int64)))
    table_add.input(1).replace_source_output(sliced.output(0))
    for op in model.get_ordered_ops():
        pattern = op.input(1).get_source_output().get_node() if op.get_type_name() == "Reshape" else None
        if pattern is not None and pattern.get_type_name() == "Constant":
            values = pattern.get_data().copy()
            if (values == positions).sum() == 1 and (values == -1).sum() == 0:
                values[values == positions] = -1
                op.input(1).replace_source_output(ops.constant(values).output(0))
    shape = model.inputs[0].get_partial_shape()
    model.reshape({model.inputs[0]: ov.PartialShape([shape[0], shape[1], -1])})
    return model


class _ProbeMixin:
    """Fidelity probes on the artifact's encoder/decoder IR (numpy in, numpy out), as TorchRuntime defines them."""

    def _probe_model(self):
        raise NotImplementedError

    def encoder_output(self, features: np.ndarray) -> np.ndarray:
        import torch

        model = self._probe_model()
        with torch.inference_mode():
            out = model.encoder(input_features=torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        return out.last_hidden_state.float().numpy().copy()

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray:
        """Teacher-forced argmax through the path ``generate`` takes: the prompt in one decoder call (which resets the
        stateful decoder), then one token per call, each reading the KV cache (the decoder's state) of the previous."""
        import torch

        model = self._probe_model()
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        tokens = [int(t) for t in tokens]
        no_ts = getattr(model.generation_config, "no_timestamps_token_id", None)
        first = tokens.index(no_ts) + 1 if no_ts in tokens else 1
        out = []
        with torch.inference_mode():
            enc = model.encoder(input_features=x).last_hidden_state
            past = None
            for start, end in [(0, first)] + [(i, i + 1) for i in range(first, len(tokens))]:
                ids = torch.tensor([tokens[start:end]], dtype=torch.long)
                step = model.decoder(input_ids=ids, encoder_hidden_states=enc, past_key_values=past)
                past = step.past_key_values  # ((),) for the stateful decoder: "continue from the state"
                out.append(step.logits[0].argmax(-1).numpy())
        return np.concatenate(out)


class OVRuntime(_ProbeMixin, GenerateRuntime):
    """transformers ``generate`` (the Python decode loop) over optimum-intel's OpenVINO encoder and decoder."""

    fidelity_method = FIDELITY_METHOD

    def __init__(self, model, model_dir: Path, ov_device: str, props: dict, threads: int, ir_dir: Path | None = None):
        super().__init__(model, model_dir, device="cpu", dtype=None)
        self.torch_for_glue_only()
        self.ov_device, self.props, self.threads = ov_device, props, threads
        self.ir_dir, self._window_encoder = ir_dir, None
        self.log = _CallLog()
        self._enc_times: list[float] = []
        self._dec_times: list[float] = []
        model.encoder.request = _TimedRequest(model.encoder.request, self._enc_times)
        model.decoder.request = _TimedRequest(model.decoder.request, self._dec_times)

    def _probe_model(self):
        return self.model

    def encode_window(self, feats):
        """The adaptive window: a second compiled encoder (``window_encoder``, same properties), made on first use."""
        import openvino as ov
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        if self._window_encoder is None:
            model = window_encoder(self.ir_dir)
            if model is None:
                raise WhisperoptError(f"the encoder IR in {self.ir_dir} does not have the layout the window option "
                                      "reshapes (positional-table addition and reshapes of the 1500 positions)")
            self._window_encoder = ov.Core().compile_model(model, self.ov_device, dict(self.props))
        t = time.perf_counter()
        hidden = self._window_encoder(feats.numpy())[0]
        self._enc_times.append(time.perf_counter() - t)
        return BaseModelOutput(last_hidden_state=torch.from_numpy(np.ascontiguousarray(hidden)))

    def transcribe(self, audios, options, forced_lengths=None):
        self._enc_times.clear()
        self._dec_times.clear()
        out = super().transcribe(audios, options, forced_lengths)
        call = self.log.new_call()
        call["encoder"].extend(self._enc_times)
        call["decoder"].extend(self._dec_times)
        return out

    def run_info(self) -> dict:
        compiled = {}
        for comp in ("encoder", "decoder"):
            req = getattr(self.model, comp).request
            # the decoder holds an InferRequest, the encoder a CompiledModel
            cm = req.get_compiled_model() if hasattr(req, "get_compiled_model") else req
            compiled[comp] = {k: _prop_text(cm.get_property(k)) for k in
                              ("INFERENCE_NUM_THREADS", "PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT",
                               "NUM_STREAMS", "EXECUTION_DEVICES")}
        return {"decode_settings": {"loop": "python (transformers generate, optimum-intel OVModelForSpeechSeq2Seq)",
                                    "ov_device": self.ov_device, **self.props, "front_end": "shared " + FRONT_END,
                                    "torch_threads": "1 (glue only: OpenVINO owns --threads)"},
                "compiled_properties": compiled,
                **({"isa_path": ov_isa_path(self.model.encoder.request)} if self.ov_device == "CPU" else {}),
                **self.log.summary()}


def _token_counter():
    """A GenAI streamer that keeps every generated token id (GenAI's results carry text, not token ids)."""
    import openvino_genai as ov_genai

    class TokenCounter(ov_genai.StreamerBase):
        def __init__(self):
            super().__init__()
            self.tokens: list[int] = []

        def write(self, token):
            if isinstance(token, (list, tuple)):
                self.tokens.extend(int(t) for t in token)
            else:
                self.tokens.append(int(token))
            return ov_genai.StreamingStatus.RUNNING

        def end(self):
            pass

    return TokenCounter()


class GenAIRuntime(_ProbeMixin, Runtime):
    """``openvino_genai.WhisperPipeline`` on the artifact's IRs: feature extraction and decode loop in C++."""

    fidelity_method = FIDELITY_METHOD + ", through OpenVINO directly (WhisperPipeline exposes neither)"

    def __init__(self, ir_dir: Path, model_dir: Path, ov_device: str, props: dict, threads: int):
        import openvino_genai as ov_genai

        self.ir_dir, self.model_dir = Path(ir_dir), Path(model_dir)
        self.ov_device, self.props, self.threads = ov_device, props, threads
        self.pipe = ov_genai.WhisperPipeline(str(ir_dir), ov_device, **props)
        self.config = self.pipe.get_generation_config()
        self.multilingual = bool(self.config.is_multilingual)
        self.processor = load_processor(model_dir)
        self.tokenizer = self.processor.tokenizer
        self.special = set(self.tokenizer.all_special_ids)
        self.log = _CallLog()
        self.forced_checked = 0
        self.truncated = 0
        self._probe = None

    def _probe_model(self):
        if self._probe is None:  # the fidelity probes run the same IR files through OpenVINO directly
            self._probe = load_ov_model(self.ir_dir, self.ov_device, self.props)
        return self._probe

    def transcribe(self, audios, options: DecodeOptions, forced_lengths=None):
        limit = N_TEXT_CTX - prompt_length(self.multilingual)
        results = []
        call = self.log.new_call()
        for i, audio in enumerate(audios):
            audio = np.asarray(audio, dtype=np.float32)
            if len(audio) > N_SAMPLES:  # one 30-s window per utterance, as the HF feature extractor does
                audio = audio[:N_SAMPLES]
                self.truncated += 1
            kwargs = {"return_timestamps": False, "num_beams": options.beam_size}
            if self.multilingual:
                kwargs.update(language=f"<|{options.language or 'en'}|>", task=options.task)
            n = None
            if forced_lengths:
                n = min(forced_lengths[i], limit)
                kwargs.update(max_new_tokens=n, min_new_tokens=n)
            else:
                kwargs["max_new_tokens"] = min(options.max_new_tokens or limit, limit)
            streamer = _token_counter() if options.beam_size == 1 else None
            try:
                res = self.pipe.generate(audio, streamer=streamer, **kwargs) if streamer else \
                    self.pipe.generate(audio, **kwargs)
            except RuntimeError as exc:
                raise WhisperoptError(f"openvino-genai WhisperPipeline.generate failed: {described(exc)}") from None
            metrics = res.perf_metrics
            generated = int(metrics.get_num_generated_tokens())
            if n is not None and generated != n:
                raise WhisperoptError(f"openvino-genai decoded {generated} tokens where {n} were forced: "
                                      "rows would not be comparable")
            if n is not None:
                self.forced_checked += 1
            raw = metrics.whisper_raw_metrics
            call["encoder"].extend(float(d) / 1e6 for d in raw.encode_inference_durations)
            call["decoder"].extend(float(d) / 1e6 for d in raw.decode_inference_durations)
            text = res.texts[0].strip() if res.texts else ""
            if streamer is not None:
                tokens = [t for t in streamer.tokens if t not in self.special]
            else:
                tokens = [t for t in self.tokenizer.encode(text, add_special_tokens=False)]
            results.append(Transcription(text, tokens))
        return results

    def run_info(self) -> dict:
        info = {"decode_settings": {"loop": "C++ (openvino_genai.WhisperPipeline)", "ov_device": self.ov_device,
                                    **self.props, "front_end": "own (openvino_genai's C++ feature extractor, from audio)",
                                    "forcing": "min_new_tokens = max_new_tokens = n, generated count checked"},
                "ir_dir": str(self.ir_dir),
                **self.log.summary()}
        if self.ov_device == "CPU":  # the pipeline hides its compiled models: the same IR compiled with the same
            # properties (the fidelity probes' model, loaded once and reused by them) executes the same primitives
            example = np.zeros((1, self.processor.feature_extractor.feature_size, N_FRAMES), dtype=np.float32)
            info["isa_path"] = ov_isa_path(self._probe_model().encoder.request, example)
        if self.forced_checked:
            info["forced_lengths_checked"] = self.forced_checked
        if self.truncated:
            info["truncated_to_30s"] = self.truncated
        return info

    def close(self) -> None:
        self.pipe = None
        self._probe = None
