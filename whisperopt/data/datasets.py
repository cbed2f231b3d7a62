"""Evaluation datasets: LibriSpeech directories (openslr layout), JSONL manifests, and ``librispeech:<split>`` names."""

from __future__ import annotations

import json
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import cache_root, data_dir
from ..errors import WhisperoptError
from ..metrics.longform import LongformReference
from .audio import SAMPLE_RATE, audio_file_problem, load_audio

LIBRISPEECH_SPLITS = ["test-clean", "test-other", "dev-clean", "dev-other", "train-clean-100", "train-clean-360",
                      "train-other-500"]
OPENSLR_URL = "https://www.openslr.org/resources/12/{split}.tar.gz"


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: str  # path
    text: str  # reference transcript, as given
    language: str | None = None
    origin: str | None = None  # where it is listed, "manifest.jsonl:3": named in its audio errors
    longform: LongformReference | None = None  # a long-form file's spans and stretches (data/longform.py)

    def load(self):
        """The audio as 16 kHz mono float32 (``load_audio``); an error names the line that lists it."""
        try:
            return load_audio(self.audio)
        except WhisperoptError as exc:
            if self.origin:
                raise WhisperoptError(f"{self.origin}: {exc}") from None
            raise


def has_sound(audio) -> bool:
    """False for digital silence: decoded audio with no samples or every sample exactly 0 (LibriSpeech dev-clean here
    holds 30 such files, all of speaker 84 and 251-118436-0003, whose transcripts no audio backs)."""
    return bool(np.size(audio)) and bool(np.any(audio))


@dataclass
class Dataset:
    name: str
    utterances: list[Utterance]
    silent: tuple[str, ...] = ()  # ids ``with_sound`` dropped (digital silence)

    def __len__(self) -> int:
        return len(self.utterances)

    def limit(self, n: int | None) -> Dataset:
        if n is None:
            return self
        if n <= 0:
            raise WhisperoptError(f"--limit must be a positive number of utterances, got {n}")
        return Dataset(self.name, self.utterances[:n], self.silent)

    def with_sound(self, n: int | None = None, wanted: str | None = None) -> Dataset:
        """The first ``n`` utterances (all if None) whose decoded audio is not digital silence (``has_sound``); the
        silent ones met on the way are dropped and listed in ``silent``. Fewer than ``n`` with sound: with ``wanted``
        (what asked for ``n``, e.g. "onnx-int8-static option calibration_size") a one-line error naming both numbers,
        else as many as there are (like ``limit``)."""
        kept: list[Utterance] = []
        silent: list[str] = []
        for u in self.utterances:
            if n is not None and len(kept) >= n:
                break
            if has_sound(u.load()):
                kept.append(u)
            else:
                silent.append(u.id)
        if wanted and n is not None and len(kept) < n:
            raise WhisperoptError(f"{wanted}={n}: {self.name} has only {len(kept)} utterances with sound "
                                  f"({len(silent)} of its {len(self)} are digital silence, every sample 0)")
        return Dataset(self.name, kept, tuple(silent))

    def durations(self) -> list[float]:
        import soundfile as sf

        out = []
        for u in self.utterances:
            try:
                out.append(float(sf.info(u.audio).duration))
            except Exception:
                out.append(len(u.load()) / SAMPLE_RATE)
        return out

    def stats(self) -> dict:
        d = self.durations()
        return {
            "utterances": len(d),
            "total_s": round(sum(d), 2),
            "mean_s": round(sum(d) / len(d), 2) if d else 0.0,
            "min_s": round(min(d), 2) if d else 0.0,
            "max_s": round(max(d), 2) if d else 0.0,
        }


def load_librispeech_dir(root: Path, name: str | None = None) -> Dataset:
    """All ``*.trans.txt`` below ``root`` (a split dir, a speaker dir, or a LibriSpeech/ dir), sorted by id."""
    root = Path(root)
    if not root.is_dir():
        raise WhisperoptError(f"dataset directory not found: {root}")
    utts: list[Utterance] = []
    for trans in sorted(root.rglob("*.trans.txt")):
        try:
            lines = trans.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise WhisperoptError(f"{trans}: not UTF-8 text") from None
        for line_no, line in enumerate(lines, 1):
            line = line.strip()
            if not line:
                continue
            uid, _, text = line.partition(" ")
            audio = None
            for ext in (".flac", ".wav"):
                candidate = trans.parent / f"{uid}{ext}"
                if candidate.exists():
                    audio = candidate
                    break
            if audio is None:
                continue  # transcripts list every utterance of a chapter; subsets keep only some audio
            if not text.strip():
                raise WhisperoptError(f"utterance {uid} has an empty transcript ({trans}:{line_no})")
            utts.append(Utterance(uid, str(audio), text.strip(), "en", f"{trans}:{line_no}"))
    transcribed = {u.id for u in utts}
    for audio in sorted(list(root.rglob("*.flac")) + list(root.rglob("*.wav"))):
        if audio.stem not in transcribed:
            raise WhisperoptError(f"utterance without transcript: {audio} (no line for {audio.stem} in a .trans.txt)")
    if not utts:
        raise WhisperoptError(f"no LibriSpeech utterances (*.trans.txt + .flac) found under {root}")
    utts.sort(key=lambda u: u.id)
    return Dataset(name or root.name, utts)


def load_manifest(path: Path) -> Dataset:
    """JSON lines with ``audio`` (path, relative to the manifest), ``text``, optional ``language`` and ``id``."""
    path = Path(path)
    utts = []
    seen = set()
    for line_no, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise WhisperoptError(f"{path}:{line_no}: not UTF-8 text (save the manifest as UTF-8)") from None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WhisperoptError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict) or "audio" not in rec:
            raise WhisperoptError(f"{path}:{line_no}: each line needs an 'audio' field")
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise WhisperoptError(f"{path}:{line_no}: utterance without transcript ('text' missing or empty)")
        audio = Path(rec["audio"]).expanduser()
        if not audio.is_absolute():
            audio = path.parent / audio
        problem = audio_file_problem(audio)
        if problem:
            raise WhisperoptError(f"{path}:{line_no}: {audio}: {problem}")
        uid = str(rec.get("id") or audio.stem)
        if uid in seen:
            raise WhisperoptError(f"{path}:{line_no}: duplicate utterance id {uid!r}")
        seen.add(uid)
        utts.append(Utterance(uid, str(audio), text.strip(), rec.get("language"), f"{path}:{line_no}"))
    if not utts:
        raise WhisperoptError(f"manifest {path} lists no utterances")
    return Dataset(path.stem, utts)


def librispeech_search_paths() -> list[Path]:
    paths = []
    if os.environ.get("WHISPEROPT_LIBRISPEECH"):
        paths.append(Path(os.environ["WHISPEROPT_LIBRISPEECH"]))
    here = Path.cwd()
    for base in [here, *here.parents][:4]:
        paths.append(base / "shared" / "data" / "librispeech")
    pkg_root = Path(__file__).resolve().parents[2]
    paths.append(pkg_root.parent / "shared" / "data" / "librispeech")
    paths.append(cache_root() / "data" / "librispeech")  # a search path: an unusable cache is not an error here
    return paths


def find_librispeech_split(split: str) -> Path | None:
    for base in librispeech_search_paths():
        for candidate in (base / "LibriSpeech" / split, base / split):
            if candidate.is_dir():
                return candidate
    return None


def download_librispeech(split: str) -> Path:
    """Download and unpack an openslr LibriSpeech split into the cache."""
    target = data_dir() / "librispeech"
    target.mkdir(parents=True, exist_ok=True)
    url = OPENSLR_URL.format(split=split)
    archive = target / f"{split}.tar.gz"
    try:
        tmp = archive.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
        tmp.rename(archive)
    except OSError as exc:
        raise WhisperoptError(
            f"LibriSpeech {split} is not available locally and downloading {url} failed ({exc}); "
            f"set WHISPEROPT_LIBRISPEECH to a directory holding LibriSpeech/{split}"
        ) from None
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    archive.unlink()
    return target / "LibriSpeech" / split


def is_test_data(path: str) -> bool:
    """True for a LibriSpeech test split (``librispeech:test-clean``, ``librispeech-long:test-clean:hard``,
    ``.../test-other/...``) or a directory named ``test``: calibration must never see the audio the benchmark
    measures."""
    text = str(path)
    if text.startswith(("librispeech:", "librispeech-long:")):
        return text.split(":", 1)[1].lower().startswith("test")
    return any(p in ("test", "test-clean", "test-other") for p in (part.lower() for part in Path(text).parts))
