"""The small interface every engine implements: build an artifact, load it, transcribe a batch.

A recipe module defines ``Recipe`` subclasses (what to build and how to load it) and a ``Runtime`` (a loaded model).
Nothing engine-specific lives outside its module; the benchmark runner only talks to this interface.

The contract, declared on each recipe (see CONTRIBUTING.md):
  * ``name``, ``engine``, ``description``, ``modules`` (Python modules the engine needs), ``devices``;
  * ``options``: a table of ``Option`` (default and allowed values), checked in one place (``resolve_options``);
  * ``fidelity_floor``: the teacher-forced top-1 agreement with the baseline a fresh build must reach
    (``validation.validate_artifact``, called by the artifact cache for every build, through the hooks
    ``probe_runtime``, ``validation_device`` and ``encoder_check_unsupported``); ``baseline`` marks the reference;
  * ``base_recipe``: the artifact a build starts from (built and cached first, handed to ``build``), and
    ``shares_base_weights`` when the recipe runs that artifact as it is (only the runtime differs);
  * ``build`` (write the artifact) and ``load`` (return a ``Runtime``).
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from ..constants import MAX_BATCH, MAX_CANDIDATES, MAX_NEW_TOKENS, WINDOW_AUTO_FLOOR_S, WINDOW_FULL, WINDOW_MARGIN_S
from ..data.features import check_window
from ..errors import WhisperoptError
from ..metrics.hardware import cuda_available

# Files that describe a model rather than hold its weights (excluded from "size on disk").
NON_WEIGHT_SUFFIXES = {".json", ".txt", ".tiktoken", ".md", ".model", ".py"}


def check_decode_limits(beam_size: int | None = None, best_of: int | None = None, batch_size: int | None = None,
                        max_new_tokens: int | None = None) -> None:
    """The one check of the decode settings every command takes (None: not given): beyond these an engine tries
    to allocate hundreds of GB, or caps silently. A one-line error names the flag."""
    for flag, value, most in (("--beam-size", beam_size, MAX_CANDIDATES), ("--best-of", best_of, MAX_CANDIDATES),
                              ("--batch-size", batch_size, MAX_BATCH), ("--max-new-tokens", max_new_tokens, MAX_NEW_TOKENS)):
        if value is not None and not 1 <= value <= most:
            raise WhisperoptError(f"{flag} must be between 1 and {most}, got {value}")


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding settings shared by every recipe of a benchmark (greedy, fixed language and task, no timestamps)."""

    beam_size: int = 1
    language: str | None = "en"
    task: str = "transcribe"
    max_new_tokens: int | None = None  # None: up to the decoder's N_TEXT_CTX positions
    batch_size: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Transcription:
    text: str
    tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class WindowOptions:
    """How to decode one 30-s window of long-form audio (``whisperopt.transcribe``; see ``Runtime.decode_windows``).

    ``prompt`` holds the previous text's tokens (without <|startofprev|>); the engine prefixes it, then
    <|startoftranscript|>[<|lang|><|task|>][<|notimestamps|>]. ``temperature`` > 0 samples ``best_of`` candidates
    (beam_size is ignored) and keeps the one with the best average log-probability.
    """

    language: str | None = None  # a language code; None for English-only checkpoints
    task: str = "transcribe"
    timestamps: bool = True
    temperature: float = 0.0
    beam_size: int = 1
    best_of: int = 1
    max_new_tokens: int = 224  # openai-whisper's sample_len: half the decoder's N_TEXT_CTX positions
    prompt: tuple[int, ...] = ()
    word_timestamps: bool = False  # also return WindowResult.token_times (engines without word_timestamps_unsupported)


@dataclass
class WindowResult:
    """One decoded window: generated tokens (text and timestamp tokens; no prompt, no end-of-text) and scores."""

    tokens: list[int]
    avg_logprob: float  # sum of token log-probabilities (end-of-text included) / (len(tokens) + 1)
    no_speech_prob: float  # probability of <|nospeech|> (<|nocaptions|>) at the <|startoftranscript|> position
    token_times: list[float] | None = None  # with word_timestamps: where each token starts (s from the window's
    # start, cross-attention alignment), plus one entry for where the last one ends
    token_probs: list[float] | None = None  # with word_timestamps: each token's probability (a word's is their mean)


@dataclass
class FileTranscript:
    """A whole file transcribed by an engine's own long-form pipeline (``Runtime.transcribe_file``)."""

    segments: list[dict]  # {"start", "end", "text"} in seconds of the input (+ "words" where the engine gives them)
    language: str | None
    duration: float | None  # seconds of audio the pipeline read
    #: what the pipeline reports besides; "speech": [[start, end], ...] seconds it decoded (a VAD pipeline), which
    #: the long-form bench uses to place the words of a segment without timestamps inside it
    info: dict = field(default_factory=dict)


@dataclass
class Artifact:
    """A built recipe: its directory (with manifest.json) and the source model it came from."""

    recipe: str
    dir: Path
    model_dir: Path
    manifest: dict
    options: dict

    @property
    def weights_dir(self) -> Path:
        return Path(self.manifest.get("weights_dir") or self.dir)


class RunInfo(TypedDict, total=False):
    """What a runtime reports after a benchmark run (``Runtime.run_info``); the report reads these keys."""

    decode_settings: dict  # the settings the engine actually ran with (front end included)
    not_comparable: str  # why its rows cannot be compared with the baseline's, if they cannot
    own_settings: str  # why it decoded with settings other than the bench's (WER comparable, time not like-for-like)
    forced_lengths_checked: int  # forced decode lengths verified against the tokens the engine produced
    isa_path: dict  # the precision and ISA path its matrix products ran on (``metrics.isa.kernel_path``)
    component_timing_calls: int  # per-component (encoder / decoder) median call times, where the engine times them
    encoder_ms_median: float | None
    decoder_ms_median: float | None
    decoder_first_ms_median: float | None
    decoder_step_ms_median: float | None


class Runtime(ABC):
    """A loaded recipe, ready to transcribe."""

    device: str = "cpu"
    #: the ``window`` option the runtime encodes with (set by ``Recipe.open``; data/features.py ``window_frames``)
    window: str = WINDOW_FULL
    #: how ``encoder_output`` / ``teacher_forced_top1`` reach the engine (recorded beside the fidelity figures)
    fidelity_method: str = "encoder output and teacher-forced decoder logits of the engine's own model"

    @abstractmethod
    def transcribe(
        self, audios: list[np.ndarray], options: DecodeOptions, forced_lengths: list[int] | None = None
    ) -> list[Transcription]:
        """Transcribe a batch of 16 kHz mono arrays (each ≤ 30 s).

        ``forced_lengths``: for synthetic checkpoints, decode exactly this many tokens per item (end-of-text
        suppressed until then), so the compute equals a real run of the reference transcript's length.
        """

    # --- fidelity probes (optional; None means "this engine does not expose it") ---
    def encoder_output(self, features: np.ndarray) -> np.ndarray | None:
        """Encoder hidden states for log-mel ``features`` of shape (1, n_mels, 3000)."""
        return None

    def teacher_forced_top1(self, features: np.ndarray, tokens: list[int]) -> np.ndarray | None:
        """argmax next-token prediction at every position of ``tokens`` given the audio features."""
        return None

    # --- long-form transcription (optional; whisperopt.transcribe) ---
    #: why this engine cannot decode long-form windows with timestamps and scores; None when it can
    long_form_unsupported: str | None = ("the engine returns text only (no timestamp tokens, log-probabilities or "
                                         "no-speech probability)")

    #: why this engine cannot align tokens to time (WindowOptions.word_timestamps); None when it can
    word_timestamps_unsupported: str | None = "the engine exposes no cross-attention weights to align words with"

    def decode_windows(self, audios: list[np.ndarray], options: WindowOptions) -> list[WindowResult]:
        """Decode each 16 kHz window (≤ 30 s, padded by the engine) once, with timestamp tokens and scores."""
        raise WhisperoptError(f"long-form decoding unavailable: {self.long_form_unsupported}")

    #: the engine's own whole-file pipeline, run as its users run it (``transcribe_file``), in a few words; None:
    #: the engine has none, and long audio goes through ``whisperopt.transcribe``'s modes like every engine's
    native_long_form: str | None = None

    def transcribe_file(self, audio, language: str | None = None, task: str = "transcribe") -> FileTranscript:
        """Transcribe a whole input (a path or a 16 kHz mono array, any length) with the engine's own pipeline."""
        raise WhisperoptError("this engine has no long-form pipeline of its own (Runtime.native_long_form)")

    def language_probabilities(self, audio: np.ndarray) -> dict[str, float] | None:
        """P(language) over the checkpoint's languages for one ≤ 30-s window; None if the engine cannot tell."""
        return None

    def run_info(self) -> RunInfo:
        """The settings the engine ran with and anything that makes its rows not comparable (after a run)."""
        return {}

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Option:
    """One recipe option (``--option key=value``): its default, and the values it accepts.

    ``choices``: the allowed values (empty: any value of the default's type); ``check``: returns why a value is
    wrong (or None); ``normalise``: applied before checking (e.g. ``str.upper``).
    """

    default: Any
    choices: tuple = ()
    check: Callable[[Any], str | None] | None = None
    normalise: Callable[[Any], Any] | None = None
    #: True: read by the runtime only (``artifact.options``), not by ``build``: artifacts that differ only in it
    #: are one cached artifact (``artifacts.build_options``)
    runtime_only: bool = False
    help: str = ""


#: every recipe's ``window`` option: the shortest encoder window, in seconds ('auto': the tuned floor;
#: '30': the full 30-s window, the default). Engines that cannot encode less set ``Recipe.window_unsupported``.
WINDOW_OPTION = Option(WINDOW_FULL, check=check_window, normalise=str, runtime_only=True,
                       help=f"encode max(clip + {WINDOW_MARGIN_S:g} s, floor) instead of 30 s: auto (a "
                            f"{WINDOW_AUTO_FLOOR_S}-s floor), N (a floor of N s) or 30 (the full window, default)")


def positive(value) -> str | None:
    return None if value > 0 else "expected a positive integer"


def group_names(value) -> list[str]:
    """The names of a ``none`` or ``+``-joined option value (layer groups kept in float, say)."""
    return [] if str(value) == "none" else str(value).split("+")


def groups_check(known):
    """An ``Option`` check: ``none`` or names from ``known`` joined with ``+``."""
    def check(value) -> str | None:
        names = group_names(value)
        if names and all(n in known for n in names):
            return None
        return None if str(value) == "none" else f"expected none or names from {'+'.join(known)} joined with +"
    return check


class Recipe(ABC):
    """One optimised variant of a checkpoint for one engine.

    Variants of one engine are plain instances: ``MyRecipe(name="x-int8", compute_type="int8")`` overrides class
    attributes (only ones the class declares).
    """

    name: str = ""
    engine: str = ""
    description: str = ""
    modules: tuple[str, ...] = ()  # Python modules the engine needs
    devices: tuple[str, ...] = ("cpu", "cuda")
    options: dict[str, Option] = {}
    baseline: bool = False  # the registry's one reference recipe (``recipes.baseline_recipe``)
    #: the recipe of the same engine and decode loop that per-component times are compared with (None: not compared)
    component_baseline: str | None = None
    #: teacher-forced top-1 agreement with the baseline required of a fresh build (None: not checked, an intermediate
    #: artifact); on trained weights ``validation.REAL_FLOOR`` and the decode check apply as well
    fidelity_floor: float | None = 0.999
    #: why the build check cannot compare this engine's encoder states with the baseline's (then teacher-forced
    #: agreement and the decode check alone decide); None: it compares them
    encoder_check_unsupported: str | None = None
    #: the recipe whose cached artifact this one's build starts from (built first, passed to ``build`` as ``base``)
    base_recipe: Recipe | None = None
    #: True: the artifact *is* the base's (no build; the manifest points at it and inherits its validation)
    shares_base_weights: bool = False
    #: bits per weight of the matrices the decoder reads each step (the roofline's bytes per decoded token)
    weight_bits: int = 32
    #: the precision its matrix products run in on CPU (``metrics.isa.PRECISIONS``): the roofline's peak and the
    #: ISA path recorded for engines that do not report one (a runtime's ``run_info()['isa_path']`` wins)
    compute_precision: str = "fp32"
    #: True when ``load`` also reads the source checkpoint's weights (``artifact.model_dir``), e.g. to build the
    #: module a quantised state dict fills: ``whisperopt export`` then ships them beside the artifact
    loads_source_weights: bool = False
    #: why this engine cannot encode fewer than 3000 frames (option ``window`` other than 30 is refused); None: it can
    window_unsupported: str | None = "not supported by this engine"
    #: options a named variant fixes (``R@window=auto``: ``recipes.get_recipe``); {} for registry recipes
    preset: dict = {}
    #: the registry recipe a named variant is of (its artifact is that recipe's); None for registry recipes
    variant_of: str | None = None

    def __init__(self, **attrs):
        for key, value in attrs.items():
            if not hasattr(type(self), key):
                raise TypeError(f"{type(self).__name__} has no attribute {key!r} to set")
            setattr(self, key, value)
        if "window" not in self.options:
            self.options = {**self.options, "window": WINDOW_OPTION}

    @property
    def artifact_name(self) -> str:
        """The name its artifacts are cached under (a variant shares its registry recipe's)."""
        return self.variant_of or self.name

    def variant(self, preset: dict) -> Recipe:
        """This recipe with some options fixed, under its own name ``R@k=v[@k=v]`` (one bench row of its own)."""
        import copy

        resolved = self.resolve_options(preset)  # unknown keys and bad values: one line, as --option
        fixed = {k: resolved[k] for k in preset}
        clone = copy.copy(self)
        clone.name = self.name + "".join(f"@{k}={v}" for k, v in fixed.items())
        clone.preset, clone.variant_of, clone.baseline = fixed, self.name, False
        return clone

    def build_options(self, options: dict) -> dict:
        """The options a build depends on (``Option.runtime_only`` ones dropped): the artifact cache's key."""
        return {k: v for k, v in options.items() if not (k in self.options and self.options[k].runtime_only)}

    def __repr__(self) -> str:
        return f"<recipe {self.name}>"

    @property
    def defaults(self) -> dict:
        return {key: opt.default for key, opt in self.options.items()}

    def unavailable_reason(self, device: str) -> str | None:
        """Why this recipe cannot run here (missing engine, wrong device), or None."""
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"engine not installed (missing Python module {', '.join(missing)})"
        if device not in self.devices:
            return f"needs {' or '.join(d.upper() for d in self.devices)}, running on {device.upper()}"
        if device == "cuda" and not cuda_available():
            return "no CUDA device here (--device cuda)"
        return None

    def resolve_options(self, given: dict | None) -> dict:
        """The recipe's options: defaults, overridden by ``given`` (strings from the command line are coerced to the
        default's type), each checked against its ``Option``; any bad key or value is a one-line error."""
        given = {**self.preset, **(given or {})}
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise WhisperoptError(f"recipe {self.name} has no option {', '.join(unknown)} (options: {known})")
        opts = {}
        for key, opt in self.options.items():
            value = _coerce(given[key], opt.default, f"{self.name} option {key}") if key in given else opt.default
            if opt.normalise is not None:
                value = opt.normalise(value)
            if opt.choices and value not in opt.choices:
                raise WhisperoptError(f"{self.name} option {key}: expected one of "
                                      f"{', '.join(map(str, opt.choices))}, got {value!r}")
            why = opt.check(value) if opt.check is not None else None
            if why:
                raise WhisperoptError(f"{self.name} option {key}: {why}, got {value!r}")
            opts[key] = value
        if opts.get("window", WINDOW_FULL) != WINDOW_FULL and self.window_unsupported:
            raise WhisperoptError(f"{self.name} option window={opts['window']}: {self.window_unsupported}; this "
                                  f"engine encodes full 30-s windows only (window={WINDOW_FULL})")
        return opts

    def base_options(self, options: dict) -> dict:
        """The options of the base artifact this recipe starts from (default: the base recipe's defaults)."""
        return self.base_recipe.resolve_options({}) if self.base_recipe is not None else {}

    def versions(self) -> dict:
        """Library versions recorded in the manifest (and in the benchmark's environment block)."""
        return {}

    @abstractmethod
    def build(self, model_dir: Path, out_dir: Path, options: dict, base: Artifact | None = None) -> dict:
        """Write the artifact into ``out_dir``; return extra manifest fields (e.g. {"weights_dir": ...}).

        ``base``: the cached artifact of ``base_recipe`` (None without one)."""

    @abstractmethod
    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        """Load a built artifact."""

    def open(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        """``load``, then give the runtime the artifact's runtime options (``window``): what every caller uses."""
        runtime = self.load(artifact, device, threads)
        runtime.window = str(artifact.options.get("window", WINDOW_FULL))
        return runtime

    # --- hooks of the build-time check (``validation.validate_artifact``, a template over every recipe) ---
    def validation_device(self) -> str:
        return "cpu" if "cpu" in self.devices else self.devices[0]

    def probe_runtime(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        """The runtime whose probes and decoding the build check uses (default: the recipe's own ``load``)."""
        return self.load(artifact, device, threads)

    def size_bytes(self, artifact: Artifact) -> int:
        """Bytes of weight files on disk (tokenizer and config files excluded)."""
        root = artifact.weights_dir
        return sum(
            p.stat().st_size
            for p in root.rglob("*")
            if p.is_file() and p.suffix not in NON_WEIGHT_SUFFIXES and not p.name.startswith(".")
        )


def _coerce(value, default, what: str):
    if isinstance(value, str) and not isinstance(default, str):
        if isinstance(default, bool):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise WhisperoptError(f"{what}: expected true/false, got {value!r}")
        if isinstance(default, int):
            try:
                return int(value)
            except ValueError:
                raise WhisperoptError(f"{what}: expected an integer, got {value!r}") from None
        if isinstance(default, float):
            try:
                return float(value)
            except ValueError:
                raise WhisperoptError(f"{what}: expected a number, got {value!r}") from None
    return value
