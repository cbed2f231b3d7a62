"""What ``whisperopt serve`` runs with, checked in one place: limits, the API key (fail closed), timeouts, the grace.

The key comes from ``--api-key``, ``--api-key-file`` or ``$WHISPEROPT_API_KEY``; an empty or blank one is an error,
never "no key" (``--api-key "$KEY"`` with KEY unset must not turn authentication off). Without any key the server
listens on a loopback address only, unless ``--no-auth`` says that an open server is meant (``server.check_exposure``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..constants import MAX_BATCH, MAX_CANDIDATES
from ..errors import WhisperoptError
from ..files import os_reason
from ..transcribe.packing import DEFAULT_GAP_S, check_gap
from ..transcribe.vad import VAD_DEFAULTS, check_vad

MIB = 1024 * 1024
KEY_ENV = "WHISPEROPT_API_KEY"
UPLOAD_TIMEOUT_S = 120.0  # a request's whole body: 25 MB at ~1.7 Mbit/s; a stalled upload is answered 408 after it
HEAD_TIMEOUT_S = 10.0  # a request's head (line and headers, at most 16 KiB in h11): a connection that sends none closes
GRACE_S = 30.0  # after SIGTERM / Ctrl-C: requests in flight may finish within it, then the rest are answered 503


@dataclass(frozen=True)
class ServeSettings:
    """What ``whisperopt serve`` was started with (the flags of the same names)."""

    model_id: str  # the id /v1/models lists and requests name (``--model`` as given)
    recipe: str = ""
    max_batch: int = 8  # clips per engine call; 1 turns dynamic batching off
    max_wait_ms: float = 20.0  # how long the oldest clip waits for others to batch with
    max_queue: int = 32  # requests in progress at once (uploading, waiting or being decoded); more get 503
    max_file_mb: float = 25.0  # upload size limit (OpenAI's)
    max_audio_s: float = 3 * 3600.0  # audio duration limit
    api_key: str | None = None  # requests must send ``Authorization: Bearer <key>``
    no_auth: bool = False  # no key on purpose: allowed on any address (without it, loopback only)
    docs: bool = False  # /docs, /redoc and /openapi.json (behind the key when there is one)
    upload_timeout: float = UPLOAD_TIMEOUT_S  # seconds for a request's body to arrive whole, 408 after
    grace: float = GRACE_S  # seconds in-flight requests get to finish after SIGTERM / Ctrl-C
    beam_size: int = 1  # beams at temperature 0
    pack: bool = False  # a batch's clips packed several to a 30-s window (transcribe/packing.py)
    pack_gap: float = DEFAULT_GAP_S  # seconds of silence after each packed clip
    vad_filter: bool = False  # every request: only the speech Silero VAD finds is decoded (transcribe/vad.py)
    vad_threshold: float = VAD_DEFAULTS["vad_threshold"]
    vad_min_silence_ms: int = VAD_DEFAULTS["vad_min_silence_ms"]
    vad_speech_pad_ms: int = VAD_DEFAULTS["vad_speech_pad_ms"]
    vad_min_speech_ms: int = VAD_DEFAULTS["vad_min_speech_ms"]
    vad_max_chunk_s: float = VAD_DEFAULTS["vad_max_chunk_s"]
    loop_repeats: int | None = None  # every request: the repetition guard (transcribe/guards.py), off by default

    def check(self) -> None:
        limits = [("--max-batch", self.max_batch, 1, MAX_BATCH), ("--max-wait-ms", self.max_wait_ms, 0, 60_000),
                  ("--max-queue", self.max_queue, 1, 100_000), ("--max-file-mb", self.max_file_mb, 0.001, 10_000),
                  ("--max-audio-s", self.max_audio_s, 0.1, 7 * 24 * 3600),
                  ("--upload-timeout", self.upload_timeout, 1, 24 * 3600), ("--grace", self.grace, 0, 24 * 3600),
                  ("--beam-size", self.beam_size, 1, MAX_CANDIDATES)]
        for flag, value, least, most in limits:
            if not least <= value <= most:
                raise WhisperoptError(f"{flag} must be between {least:g} and {most:g}, got {value:g}")
        if self.api_key is not None:
            check_key(self.api_key, "--api-key")
            if self.no_auth:
                raise WhisperoptError("--no-auth and an API key contradict each other: give one of them")
        check_gap(self.pack_gap)
        check_vad(self)
        if self.loop_repeats is not None and not 2 <= self.loop_repeats <= 50:
            raise WhisperoptError(f"--loop-repeats must be between 2 and 50, got {self.loop_repeats}")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MIB)


def check_key(key: str, source: str) -> str:
    """``key`` if it can serve as a bearer token; a one-line error naming ``source`` otherwise."""
    if not key.strip():
        hint = " (an unset variable in --api-key \"$KEY\"?)" if source == "--api-key" else ""
        raise WhisperoptError(f"{source} is empty{hint}: give the key, or --no-auth to serve without one")
    if key != key.strip() or not key.isascii() or not key.isprintable():
        raise WhisperoptError(f"{source} must be printable ASCII without leading or trailing spaces (what an "
                              "Authorization header carries)")
    return key


def api_key(flag: str | None, key_file: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The key from ``--api-key``, ``--api-key-file`` (its first line; keeps the key off the process list) or
    ``$WHISPEROPT_API_KEY``, in that order; None when none is given. Given but empty or blank is an error."""
    if flag is not None and key_file is not None:
        raise WhisperoptError("give --api-key or --api-key-file, not both")
    if flag is not None:
        return check_key(flag, "--api-key")
    if key_file is not None:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = os_reason(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            raise WhisperoptError(f"--api-key-file {key_file}: {why}") from None
        return check_key(text.strip().splitlines()[0].strip() if text.strip() else "", f"--api-key-file {key_file}")
    if KEY_ENV in environ:
        return check_key(environ[KEY_ENV], f"${KEY_ENV}")
    return None
