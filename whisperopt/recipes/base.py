"""The small interface every engine implements: build an artifact, load it, transcribe a batch.

A recipe module defines ``Recipe`` subclasses (what to build and how to load it) and a ``Runtime`` (a loaded model).
Nothing engine-specific lives outside its module; the benchmark runner only talks to this interface.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WhisperoptError

# Files that describe a model rather than hold its weights (excluded from "size on disk").
NON_WEIGHT_SUFFIXES = {".json", ".txt", ".tiktoken", ".md", ".model", ".py"}


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding settings shared by every recipe of a benchmark (greedy, fixed language and task, no timestamps)."""

    beam_size: int = 1
    language: str | None = "en"
    task: str = "transcribe"
    max_new_tokens: int | None = None  # None: up to the model's 448-token limit
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
    max_new_tokens: int = 224  # openai-whisper's sample_len: half the decoder's 448 positions
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


class Runtime(ABC):
    """A loaded recipe, ready to transcribe."""

    device: str = "cpu"

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

    def language_probabilities(self, audio: np.ndarray) -> dict[str, float] | None:
        """P(language) over the checkpoint's languages for one ≤ 30-s window; None if the engine cannot tell."""
        return None

    def close(self) -> None:
        pass


class Recipe(ABC):
    """One optimised variant of a checkpoint for one engine."""

    name: str = ""
    engine: str = ""
    description: str = ""
    modules: tuple[str, ...] = ()  # Python modules the engine needs
    devices: tuple[str, ...] = ("cpu", "cuda")
    defaults: dict = {}  # recipe options (``--option key=value``) and their defaults
    baseline: bool = False  # the registry's one reference recipe (``recipes.baseline_recipe``)
    #: the recipe of the same engine and decode loop that per-component times are compared with (None: not compared)
    component_baseline: str | None = None

    def unavailable_reason(self, device: str) -> str | None:
        """Why this recipe cannot run here (missing engine, wrong device), or None."""
        missing = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if missing:
            return f"engine not installed (missing Python module {', '.join(missing)})"
        if device not in self.devices:
            return f"needs {' or '.join(d.upper() for d in self.devices)}, running on {device.upper()}"
        return None

    def resolve_options(self, given: dict | None) -> dict:
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise WhisperoptError(f"recipe {self.name} has no option {', '.join(unknown)} (options: {known})")
        opts = dict(self.defaults)
        for key, value in given.items():
            default = self.defaults[key]
            opts[key] = _coerce(value, default, f"{self.name} option {key}")
        return opts

    def versions(self) -> dict:
        """Library versions recorded in the manifest (and in the benchmark's environment block)."""
        return {}

    @abstractmethod
    def build(self, model_dir: Path, out_dir: Path, options: dict) -> dict:
        """Write the artifact into ``out_dir``; return extra manifest fields (e.g. {"weights_dir": ...})."""

    @abstractmethod
    def load(self, artifact: Artifact, device: str, threads: int) -> Runtime:
        """Load a built artifact."""

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
