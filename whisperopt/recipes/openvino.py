"""OpenVINO recipes: IR export with optimum-intel, NNCF weight compression and static INT8 PTQ, two decode loops.

Build
  * ``openvino-fp32``: ``OVModelForSpeechSeq2Seq.from_pretrained(model_dir, export=True, load_in_8bit=False)`` then
    ``save_pretrained`` (encoder IR + one stateful decoder IR, fp32 weights), the checkpoint's tokenizer/processor
    files, and the openvino-tokenizers tokenizer/detokenizer IRs that openvino-genai needs.
  * every other recipe starts from the cached ``openvino-fp32`` artifact (built first if missing) and rewrites the
    encoder and decoder IRs: ``openvino-fp16`` saves them with fp16-compressed weights; ``openvino-int8-weights`` and
    ``openvino-int4-weights`` run ``nncf.compress_weights`` (mode, group size, ratio recorded); ``openvino-int8-ptq``
    runs ``nncf.quantize`` (static INT8 weights and activations, ``ModelType.TRANSFORMER``, SmoothQuant, fast bias
    correction) on inputs recorded from the fp32 model transcribing LibriSpeech dev-clean, the way the OpenVINO
    whisper notebooks do it: the encoder and decoder infer requests are wrapped by optimum-intel's
    ``InferRequestWrapper``, which records every input (and the stateful decoder's state resets).
  * the manifest records the weight bytes of each component (encoder / decoder ``.bin``) and its compression
    against the fp32 IR.
  * every build is checked against torch-fp32 on 2 dev-clean utterances (``validate``): encoder relative error and
    teacher-forced top-1 agreement, the decoder run through its KV-cache state the way ``generate`` runs it; a build
    under the recipe's ``fidelity_floor`` fails instead of leaving a broken artifact. Floors (measured on synthetic
    tiny, 8 dev-clean + 8 test-clean utterances): fp32 99.9 %, fp16 98 %, int8-weights 85 %, int8-ptq 45 %,
    int4-weights 35 % (random-weight logits are nearly tied, so quantisation moves top-1 far more than on a trained
    model).

Run
  * ``openvino-*``: the Python decode loop, i.e. transformers' ``generate`` driving the OpenVINO encoder and decoder
    through ``OVModelForSpeechSeq2Seq`` (``GenerateRuntime``).
  * ``openvino-*-genai``: the same artifact directory (no copy) run by ``openvino_genai.WhisperPipeline``, whose
    decode loop is C++. Forced lengths (synthetic checkpoints) use ``min_new_tokens = max_new_tokens = n`` (the
    end-of-text token is masked until ``n`` tokens exist, as ``min_new_tokens`` does in transformers); every call's
    generated-token count is checked against ``n`` and a mismatch fails the run instead of producing a row.
  * ``ov_device`` (CPU; GPU/AUTO where OpenVINO sees one), ``INFERENCE_NUM_THREADS`` = ``--threads``,
    ``PERFORMANCE_HINT`` (LATENCY) and ``INFERENCE_PRECISION_HINT`` (f32 by default: OpenVINO's CPU default is bf16
    on CPUs with AVX512-BF16/AMX, which would mix a precision change into every comparison) are recipe options and
    recorded, together with the properties the compiled models report, by ``run_info()``.
  * ``run_info()`` also returns the median per-call time of the encoder and of the decoder (the Python loop times
    the OpenVINO infer requests; GenAI reports them in its perf metrics). The first ``transcribe`` call (the bench's
    warm-up) is left out.
"""

from __future__ import annotations

import os
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from ..data.audio import SAMPLE_RATE
from ..data.features import FRONT_END
from ..data.references import forced_length
from ..errors import WhisperoptError
from .base import Artifact, DecodeOptions, Recipe, Runtime, Transcription
from .pytorch import MODEL_SIDE_FILES, copy_side_files
from .transformers_runtime import MAX_TARGET_POSITIONS, GenerateRuntime, load_processor

ENCODER = "openvino_encoder_model"
DECODER = "openvino_decoder_model"
COMPONENTS = {"encoder": ENCODER, "decoder": DECODER}
TOKENIZER_IRS = ["openvino_tokenizer", "openvino_detokenizer"]
OV_DEVICES = ("CPU", "GPU", "AUTO")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
PRECISION_HINTS = ("f32", "bf16", "f16", "default")  # "default": leave OpenVINO's device default
WINDOW = 30 * SAMPLE_RATE
CALIBRATION_DATA = "librispeech:dev-clean"

FIDELITY_METHOD = ("encoder IR output; decoder IR teacher-forced through its KV-cache state (prompt in one call, "
                   "then one token per call)")
VALIDATION_DATASET = "librispeech:dev-clean"  # build-time fidelity check (never test data)
VALIDATION_UTTERANCES = 2

# load-time settings shared by every OpenVINO recipe (recorded in the manifest like any option)
RUNTIME_DEFAULTS = {"ov_device": "CPU", "performance_hint": "LATENCY", "precision_hint": "f32"}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


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


def check_device(ov_device: str) -> str:
    import openvino as ov

    available = ov.Core().available_devices
    if ov_device != "AUTO" and not any(d == ov_device or d.startswith(ov_device + ".") for d in available):
        raise WhisperoptError(f"OpenVINO device {ov_device} not present (OpenVINO sees {', '.join(available)})")
    return ov_device


def is_test_data(path: str) -> bool:
    """True for a LibriSpeech test split (``librispeech:test-clean``, ``.../test-other/...``) or a directory named
    ``test``: calibration must never see the audio the benchmark measures."""
    text = str(path)
    if text.startswith("librispeech:"):
        return text.split(":", 1)[1].lower().startswith("test")
    return any(p in ("test", "test-clean", "test-other") for p in (part.lower() for part in Path(text).parts))


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


def _load_ov_model(ir_dir: Path, ov_device: str, props: dict):
    from optimum.intel import OVModelForSpeechSeq2Seq

    return OVModelForSpeechSeq2Seq.from_pretrained(str(ir_dir), device=ov_device, ov_config=dict(props),
                                                   export=False, compile=True, local_files_only=True)


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

    def __init__(self, model, model_dir: Path, ov_device: str, props: dict, threads: int):
        super().__init__(model, model_dir, device="cpu", dtype=None)
        self.ov_device, self.props, self.threads = ov_device, props, threads
        self.log = _CallLog()
        self._enc_times: list[float] = []
        self._dec_times: list[float] = []
        model.encoder.request = _TimedRequest(model.encoder.request, self._enc_times)
        model.decoder.request = _TimedRequest(model.decoder.request, self._dec_times)

    def _probe_model(self):
        return self.model

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
                                    "ov_device": self.ov_device, **self.props, "front_end": "shared " + FRONT_END},
                "compiled_properties": compiled,
                "fidelity_method": FIDELITY_METHOD,
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
            self._probe = _load_ov_model(self.ir_dir, self.ov_device, self.props)
        return self._probe

    def transcribe(self, audios, options: DecodeOptions, forced_lengths=None):
        prompt = 4 if self.multilingual else 2
        limit = MAX_TARGET_POSITIONS - prompt
        results = []
        call = self.log.new_call()
        for i, audio in enumerate(audios):
            audio = np.asarray(audio, dtype=np.float32)
            if len(audio) > WINDOW:  # one 30-s window per utterance, as the HF feature extractor does
                audio = audio[:WINDOW]
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
                raise WhisperoptError(f"openvino-genai WhisperPipeline.generate failed: {str(exc).splitlines()[0]}") from None
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
                "fidelity_method": FIDELITY_METHOD + ", through OpenVINO directly (WhisperPipeline exposes "
                                                     "neither)",
                **self.log.summary()}
        if self.forced_checked:
            info["forced_lengths_checked"] = self.forced_checked
        if self.truncated:
            info["truncated_to_30s"] = self.truncated
        return info

    def close(self) -> None:
        self.pipe = None
        self._probe = None


# --------------------------------------------------------------------------------------------------------------------
# recipes


class OpenVINORecipe(Recipe):
    engine = "openvino"
    modules = ("openvino", "optimum.intel", "nncf", "openvino_tokenizers")
    devices = ("cpu",)
    defaults = dict(RUNTIME_DEFAULTS)
    genai = False
    component_baseline = "openvino-fp32"
    fidelity_floor = 0.999  # teacher-forced top-1 agreement vs torch-fp32 on dev-clean required at build time

    def versions(self) -> dict:
        v = {"openvino": _version("openvino"), "openvino-tokenizers": _version("openvino-tokenizers"),
             "openvino-genai": _version("openvino-genai"), "nncf": _version("nncf"),
             "optimum-intel": _version("optimum-intel"), "optimum": _version("optimum"),
             "transformers": _version("transformers"), "torch": _version("torch")}
        return {k: val for k, val in v.items() if val}

    def resolve_options(self, given: dict | None) -> dict:
        opts = super().resolve_options(given)
        opts["ov_device"] = str(opts["ov_device"]).upper()
        opts["performance_hint"] = str(opts["performance_hint"]).upper()
        if opts["ov_device"].split(".")[0] not in OV_DEVICES:
            raise WhisperoptError(f"{self.name} option ov_device: expected one of {', '.join(OV_DEVICES)}, "
                                  f"got {opts['ov_device']!r}")
        if opts["performance_hint"] not in PERFORMANCE_HINTS:
            raise WhisperoptError(f"{self.name} option performance_hint: expected one of "
                                  f"{', '.join(PERFORMANCE_HINTS)}, got {opts['performance_hint']!r}")
        if opts["precision_hint"] not in PRECISION_HINTS:
            raise WhisperoptError(f"{self.name} option precision_hint: expected one of {', '.join(PRECISION_HINTS)}, "
                                  f"got {opts['precision_hint']!r}")
        self._check_options(opts)
        return opts

    def _check_options(self, opts: dict) -> None:
        pass

    # --- build ---
    def build(self, model_dir: Path, out_dir: Path, options: dict) -> dict:
        fp32_dir = self._fp32_ir(model_dir)
        fp32_bytes = component_bytes(fp32_dir)
        for f in fp32_dir.iterdir():  # configs, tokenizer files and tokenizer IRs travel unchanged
            if f.is_file() and f.stem not in COMPONENTS.values() and f.name != "manifest.json":
                shutil.copy(f, out_dir / f.name)
        extra = self._transform(model_dir, fp32_dir, out_dir, options) or {}
        return {**extra, "components": _components(out_dir, fp32_bytes),
                "validation": self.validate(out_dir, Path(model_dir))}

    def validate(self, ir_dir: Path, model_dir: Path) -> dict:
        """Fidelity of the IRs in ``ir_dir`` against torch-fp32 on dev-clean; below ``fidelity_floor`` is an error."""
        from .validation import fidelity_check, fidelity_failure

        threads = os.cpu_count() or 1
        props = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        # the Python-loop runtime: the probes plus a real decode (the decode check on trained weights)
        probe = OVRuntime(_load_ov_model(ir_dir, "CPU", props), Path(model_dir), "CPU", props, threads)
        try:
            result = fidelity_check(probe, Path(model_dir), self.fidelity_floor, dataset=VALIDATION_DATASET,
                                    utterances=VALIDATION_UTTERANCES, reference=_torch_reference(model_dir, threads))
        finally:
            probe.close()
        result["method"] = FIDELITY_METHOD
        if not result["passed"]:
            raise WhisperoptError(fidelity_failure(self.name, result))
        return result

    def _fp32_ir(self, model_dir: Path) -> Path:
        from .artifacts import build_artifact

        base = OpenVINOFp32()
        artifact, _ = build_artifact(base, Path(model_dir), base.resolve_options({}))
        return artifact.dir

    def _transform(self, model_dir: Path, fp32_dir: Path, out_dir: Path, options: dict) -> dict:
        raise NotImplementedError

    def _rewrite(self, fp32_dir: Path, out_dir: Path, fn, compress_to_fp16: bool = False) -> None:
        import openvino as ov

        core = ov.Core()
        for stem in COMPONENTS.values():
            model = core.read_model(str(fp32_dir / f"{stem}.xml"))
            ov.save_model(fn(stem, model), str(out_dir / f"{stem}.xml"), compress_to_fp16=compress_to_fp16)

    def size_bytes(self, artifact: Artifact) -> int:
        """Encoder + decoder weight files (the tokenizer IRs and configs are not model weights)."""
        return sum(c["bin_bytes"] for c in component_bytes(artifact.weights_dir).values())

    # --- load ---
    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        import torch

        if device != "cpu":
            raise WhisperoptError(f"{self.name} runs through OpenVINO (ov_device option), not on {device}")
        options = {**RUNTIME_DEFAULTS, **artifact.options}
        ov_device = check_device(options["ov_device"])
        props = ov_properties(options, threads)
        ir_dir = artifact.weights_dir  # a -genai recipe's manifest points at its base recipe's artifact
        torch.set_num_threads(threads)
        if self.genai:
            return GenAIRuntime(ir_dir, artifact.model_dir, ov_device, props, threads)
        return OVRuntime(_load_ov_model(ir_dir, ov_device, props), artifact.model_dir, ov_device, props, threads)


_REFERENCES: dict = {}


def _torch_reference(model_dir: Path, threads: int) -> dict:
    """torch-fp32 encoder outputs and teacher-forced tokens on the validation utterances (once per process)."""
    from .validation import torch_reference

    key = str(Path(model_dir).resolve())
    if key not in _REFERENCES:
        _REFERENCES[key] = torch_reference(Path(model_dir), VALIDATION_DATASET, VALIDATION_UTTERANCES, threads)
    return _REFERENCES[key]


def _components(ir_dir: Path, fp32_bytes: dict) -> dict:
    comps = component_bytes(ir_dir)
    for name, c in comps.items():
        c["fp32_bin_bytes"] = fp32_bytes[name]["bin_bytes"]
        c["compression"] = round(c["fp32_bin_bytes"] / c["bin_bytes"], 3)
    return comps


def convert_ov_tokenizers(model_dir: Path, out_dir: Path) -> None:
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok, detok = convert_tokenizer(hf_tok, with_detokenizer=True)
    ov.save_model(tok, str(out_dir / "openvino_tokenizer.xml"))
    ov.save_model(detok, str(out_dir / "openvino_detokenizer.xml"))


class OpenVINOFp32(OpenVINORecipe):
    name = "openvino-fp32"
    description = "OpenVINO IR exported by optimum-intel, fp32 weights, Python (transformers generate) decode loop"

    def build(self, model_dir: Path, out_dir: Path, options: dict) -> dict:
        from optimum.intel import OVModelForSpeechSeq2Seq

        model = OVModelForSpeechSeq2Seq.from_pretrained(str(model_dir), export=True, compile=False,
                                                        load_in_8bit=False, local_files_only=True)
        model.save_pretrained(str(out_dir))
        stateful = bool(model.decoder.stateful)
        del model
        copy_side_files(model_dir, out_dir)
        convert_ov_tokenizers(model_dir, out_dir)
        comps = component_bytes(out_dir)
        return {"weights": "fp32", "stateful_decoder": stateful,
                "export": "optimum-intel OVModelForSpeechSeq2Seq.from_pretrained(export=True, load_in_8bit=False)",
                "components": _components(out_dir, comps), "validation": self.validate(out_dir, Path(model_dir))}


class OpenVINOFp16(OpenVINORecipe):
    name = "openvino-fp16"
    description = "OpenVINO IR with fp16-compressed weights (decompressed to the inference precision at load)"
    fidelity_floor = 0.98  # measured 100 % (tiny, 8 dev-clean + 8 test-clean utterances)

    def _transform(self, model_dir, fp32_dir, out_dir, options):
        self._rewrite(fp32_dir, out_dir, lambda stem, m: m, compress_to_fp16=True)
        return {"weights": "fp16 (ov.save_model compress_to_fp16=True)"}


class OpenVINOWeightCompression(OpenVINORecipe):
    """``nncf.compress_weights`` data-free weight-only compression of the encoder and decoder IRs."""

    modes: tuple[str, ...] = ()

    def _check_options(self, opts):
        if opts["mode"] not in self.modes:
            raise WhisperoptError(f"{self.name} option mode: expected one of {', '.join(self.modes)}, got {opts['mode']!r}")
        if "group_size" in opts and not (opts["group_size"] == -1 or opts["group_size"] > 0):
            raise WhisperoptError(f"{self.name} option group_size: expected -1 (per channel) or a positive integer")
        if "ratio" in opts and not 0 < opts["ratio"] <= 1:
            raise WhisperoptError(f"{self.name} option ratio: expected a number in (0, 1], got {opts['ratio']}")

    def _nncf_kwargs(self, options: dict) -> dict:
        import nncf

        return {"mode": nncf.CompressWeightsMode(options["mode"])}

    def _transform(self, model_dir, fp32_dir, out_dir, options):
        import nncf

        kwargs = self._nncf_kwargs(options)
        self._rewrite(fp32_dir, out_dir, lambda stem, m: nncf.compress_weights(m, **kwargs))
        recorded = {k: (v.value if hasattr(v, "value") else v) for k, v in kwargs.items()}
        return {"weights": f"nncf.compress_weights {recorded}", "nncf_compress_weights": recorded}


class OpenVINOInt8Weights(OpenVINOWeightCompression):
    name = "openvino-int8-weights"
    description = "OpenVINO IR, NNCF int8 weight-only compression (per-channel), fp32 activations"
    modes = ("int8_asym", "int8_sym")
    defaults = {**RUNTIME_DEFAULTS, "mode": "int8_asym"}
    fidelity_floor = 0.85  # measured 92.6 % dev-clean / 95.2 % test-clean (tiny, 8 utterances each)


class OpenVINOInt4Weights(OpenVINOWeightCompression):
    name = "openvino-int4-weights"
    description = "OpenVINO IR, NNCF int4 weight-only compression (grouped; ratio of int4 layers, rest int8)"
    modes = ("int4_asym", "int4_sym", "nf4")
    defaults = {**RUNTIME_DEFAULTS, "mode": "int4_asym", "group_size": 64, "ratio": 1.0, "all_layers": False}
    fidelity_floor = 0.35  # measured 50.2 % / 48.2 % (random-weight logits are nearly tied)

    def _nncf_kwargs(self, options):
        kwargs = super()._nncf_kwargs(options)
        kwargs.update(group_size=options["group_size"], ratio=options["ratio"], all_layers=options["all_layers"])
        return kwargs

    def _transform(self, model_dir, fp32_dir, out_dir, options):
        import openvino as ov

        core = ov.Core()
        for stem in COMPONENTS.values():  # every compressed matmul's input width must be a multiple of group_size
            model = core.read_model(str(fp32_dir / f"{stem}.xml"))
            g = options["group_size"]
            widths = {int(p.get_shape()[-1]) for op in model.get_ops() if op.get_type_name() == "MatMul"
                      for p in [op.input(1).get_source_output().get_node().output(0)]
                      if op.input(1).get_source_output().get_node().get_type_name() == "Constant"}
            bad = sorted(w for w in widths if g > 0 and w % g)
            if bad:
                raise WhisperoptError(f"{self.name} option group_size={g} does not divide weight widths {bad} of {stem}")
        return super()._transform(model_dir, fp32_dir, out_dir, options)


class OpenVINOInt8PTQ(OpenVINORecipe):
    name = "openvino-int8-ptq"
    description = ("OpenVINO IR, NNCF static INT8 post-training quantization of encoder and decoder (weights and "
                   "activations; SmoothQuant, fast bias correction), calibrated on LibriSpeech dev-clean")
    defaults = {**RUNTIME_DEFAULTS, "calibration_size": 40, "calibration_data": CALIBRATION_DATA,
                "smooth_quant_alpha_encoder": 0.5, "smooth_quant_alpha_decoder": 0.95, "fast_bias_correction": True,
                "preset": "performance"}
    fidelity_floor = 0.45  # measured 60-66 % dev-clean / 71-76 % test-clean (tiny, 3-40 calibration utterances)

    def _check_options(self, opts):
        if opts["calibration_size"] < 1:
            raise WhisperoptError(f"{self.name} option calibration_size: expected a positive integer")
        for key in ("smooth_quant_alpha_encoder", "smooth_quant_alpha_decoder"):
            a = opts[key]
            if not (0 <= a <= 1 or a == -1):
                raise WhisperoptError(f"{self.name} option {key}: expected a number in [0, 1] or -1 (off), got {a}")
        if opts["preset"] not in ("performance", "mixed"):
            raise WhisperoptError(f"{self.name} option preset: expected performance or mixed, got {opts['preset']!r}")
        data = str(opts["calibration_data"])
        if is_test_data(data):
            raise WhisperoptError(f"{self.name} option calibration_data: {data} is test data; calibrate on a dev or "
                                  "train split (default librispeech:dev-clean)")

    def calibration_set(self, options: dict):
        from ..data import load_dataset

        ds = load_dataset(str(options["calibration_data"]))
        if any(is_test_data(u.audio) for u in ds.utterances):
            raise WhisperoptError(f"{self.name}: calibration data {options['calibration_data']} contains test audio")
        n = options["calibration_size"]
        if n > len(ds):
            raise WhisperoptError(f"{self.name} option calibration_size={n}: {ds.name} has only {len(ds)} utterances")
        return ds.limit(n)

    def collect(self, model_dir: Path, fp32_dir: Path, options: dict) -> tuple:
        """Inputs of every encoder and decoder inference while the fp32 IR transcribes the calibration set."""
        import torch
        from optimum.intel.openvino.quantization import InferRequestWrapper

        from ..data import load_audio
        from ..models.synthetic import is_synthetic

        ds = self.calibration_set(options)
        model = _load_ov_model(fp32_dir, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        enc_data, dec_data = [], []
        model.encoder.request = InferRequestWrapper(model.encoder.request, enc_data, apply_caching=True)
        model.decoder.request = InferRequestWrapper(model.decoder.request, dec_data, apply_caching=True)
        runtime = GenerateRuntime(model, model_dir)
        synthetic = is_synthetic(model_dir)
        decode = DecodeOptions()
        with torch.inference_mode():
            for u in ds.utterances:
                # synthetic weights decode noise: force the reference transcript's length, as the bench does
                forced = [forced_length(runtime.tokenizer, u.text)] if synthetic else None
                runtime.transcribe([load_audio(u.audio)], decode, forced)
        return enc_data, dec_data, [u.id for u in ds.utterances], ds

    def _transform(self, model_dir, fp32_dir, out_dir, options):
        import nncf
        import openvino as ov
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        t0 = time.perf_counter()
        enc_data, dec_data, ids, ds = self.collect(model_dir, fp32_dir, options)
        collect_s = time.perf_counter() - t0
        data = {"encoder": enc_data, "decoder": dec_data}
        alphas = {"encoder": options["smooth_quant_alpha_encoder"], "decoder": options["smooth_quant_alpha_decoder"]}
        preset = nncf.QuantizationPreset.PERFORMANCE if options["preset"] == "performance" else nncf.QuantizationPreset.MIXED
        core = ov.Core()
        for comp, stem in COMPONENTS.items():
            model = core.read_model(str(fp32_dir / f"{stem}.xml"))
            quantized = nncf.quantize(
                model, nncf.Dataset(data[comp]), subset_size=len(data[comp]), preset=preset,
                model_type=nncf.ModelType.TRANSFORMER, fast_bias_correction=options["fast_bias_correction"],
                advanced_parameters=AdvancedQuantizationParameters(
                    smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=alphas[comp])))
            ov.save_model(quantized, str(out_dir / f"{stem}.xml"), compress_to_fp16=False)
            del model, quantized
        return {"weights": "int8 (static PTQ: int8 weights and activations)",
                "calibration": {"dataset": str(options["calibration_data"]), "name": ds.name, "root": str(Path(ds.utterances[0].audio).parents[2]),
                                "utterances": len(ids), "ids": ids, "encoder_samples": len(enc_data),
                                "decoder_samples": len(dec_data), "collect_s": round(collect_s, 1),
                                "model_type": "TRANSFORMER", "preset": options["preset"],
                                "smooth_quant_alpha": alphas,
                                "fast_bias_correction": options["fast_bias_correction"]}}


BASE_RECIPES = [OpenVINOFp32(), OpenVINOFp16(), OpenVINOInt8Weights(), OpenVINOInt4Weights(), OpenVINOInt8PTQ()]


def _genai_twin(base: OpenVINORecipe) -> OpenVINORecipe:
    """``<base>-genai``: the same artifact directory, decoded by openvino_genai.WhisperPipeline (C++ loop)."""

    def build(self, model_dir: Path, out_dir: Path, options: dict) -> dict:
        from .artifacts import build_artifact

        shared, _ = build_artifact(base, Path(model_dir), options)
        return {"weights_dir": str(shared.dir), "shared_artifact": base.name,
                "components": shared.manifest.get("components"),
                **{k: shared.manifest[k] for k in ("weights", "calibration", "nncf_compress_weights", "validation")
                   if k in shared.manifest}}

    cls = type(type(base).__name__ + "GenAI", (type(base),), {
        "name": base.name + "-genai",
        "description": base.description.split(", Python")[0] + " — run by openvino-genai WhisperPipeline (C++ decode loop)",
        "modules": base.modules + ("openvino_genai",),
        "genai": True,
        "component_baseline": "openvino-fp32-genai",
        "build": build,
    })
    return cls()


RECIPES = BASE_RECIPES + [_genai_twin(r) for r in BASE_RECIPES]

__all__ = ["RECIPES", "OVRuntime", "GenAIRuntime", "component_bytes", "MODEL_SIDE_FILES"]
