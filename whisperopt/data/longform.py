"""Long-form benchmark files: ``librispeech-long:<split>`` and ``librispeech-long:<split>:hard``.

One file per LibriSpeech chapter whose utterances form a run of at least ``MIN_CHAIN`` consecutive numbers (a
chapter is one continuous reading cut at pauses: train-clean-5's four chapters, 9-13 min; test-clean's
1089-134686, all 38 utterances, 4.6 min). Its reference is the utterances' transcripts joined in order.

Pauses: the utterances are joined as cut, sample for sample, with nothing between them. The corpus cut each chapter
inside the reader's pauses, and each file keeps its share of the pause at both ends: measured on these 245 files by
``speech_extent`` (20-ms frames, speech = three frames within 30 dB of the file's loudest), 0.30 s median before the
speech and 0.35 s after it, so a junction holds 0.65 s median (0.26 s at the 10th percentile, 1.07 s at the 90th;
240 junctions) of the recording's own room tone: a reader's pause, with no synthetic filler for a detector to key
on.

Hard variant (same speech, same order): ``STRETCHES`` (6) non-speech stretches inserted at junctions drawn one per
sixth of the file, one short (3-10 s) and one long (20-60 s, log-uniform) of each kind: digital silence,
recorded-like noise, music-like tones (``data/nonspeech.py`` says how each is made). Seeded per chapter
(``SEED``, the chapter's name): the same sources give the same bytes.

Files are FLAC, 16 kHz mono 16-bit, written utterance by utterance (memory holds one utterance or one stretch), each
with a JSON sidecar (``metrics.longform.LongformReference.to_dict``: utterance spans and speech onsets, stretches
with their kind and how they were made, seed, sources), and one ``index.json`` (the files made; the chapters dropped
because an utterance is digital silence, which ``Dataset.silent`` lists, as for dev-clean's speaker 84 here). They
live in the cache under ``data/librispeech-long/<split>/<variant>-<key>/`` where the key hashes the source audio and
transcripts, the builder version and the seed: a changed source or builder builds a new directory (atomically, once)
and never reads a stale one. The split's name is a directory of that path, so ``is_test_data`` still sees test
audio.

Public API: ``load_longform(spec) -> Dataset`` (what ``load_dataset`` calls for these names; every ``Utterance``
carries its ``LongformReference`` in ``Utterance.longform``), ``find_chapters``, ``build_file``,
``speech_extent``.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import data_dir
from ..constants import SAMPLE_RATE
from ..errors import WhisperoptError
from ..files import atomic_dir, atomic_write_json, confined, read_json, sha256_file
from ..metrics.longform import LongformReference, SpokenSpan, Stretch
from . import nonspeech
from .datasets import LIBRISPEECH_SPLITS, Dataset, Utterance, download_librispeech, find_librispeech_split

PREFIX = "librispeech-long:"
VARIANTS = ("plain", "hard")
SPLITS = (*LIBRISPEECH_SPLITS, "train-clean-5")
BUILDER_VERSION = 1
SEED = 25
MIN_CHAIN = 20  # consecutive utterances a chapter needs to make a long-form file
STRETCHES = 6
SHORT_S, LONG_S = (3.0, 10.0), (20.0, 60.0)
FRAME = 320  # 20 ms
ONSET_DB, ONSET_FRAMES = 30.0, 3
_UTT_ID = re.compile(r"^(\d+-\d+)-(\d+)$")


class SilentSource(Exception):
    """A source utterance that is digital silence (every sample 0): its chapter makes no long-form file."""


@dataclass(frozen=True)
class Chapter:
    name: str  # "1089-134686"
    root: Path  # the split's directory; ``files`` are relative to it
    files: tuple[str, ...]
    ids: tuple[str, ...]
    texts: tuple[str, ...]


def find_chapters(root: Path) -> list[Chapter]:
    """Chapters below ``root`` (openslr layout) with ``MIN_CHAIN`` or more consecutive utterances present; a chapter
    with gaps gives its longest consecutive run (the first, on a tie)."""
    root = Path(root)
    chapters = []
    for trans in sorted(root.rglob("*.trans.txt")):
        present: dict[int, tuple[str, str, str]] = {}
        for line in trans.read_text(encoding="utf-8").splitlines():
            uid, _, text = line.strip().partition(" ")
            m = _UTT_ID.match(uid)
            audio = trans.parent / f"{uid}.flac"
            if m and text.strip() and audio.is_file():
                present[int(m.group(2))] = (uid, str(audio.relative_to(root)), text.strip())
        run: list[int] = []
        best: list[int] = []
        for k in sorted(present):
            run = run + [k] if run and k == run[-1] + 1 else [k]
            if len(run) > len(best):
                best = run
        if len(best) >= MIN_CHAIN:
            picked = [present[k] for k in best]
            chapters.append(Chapter(_UTT_ID.match(picked[0][0]).group(1), root, tuple(p[1] for p in picked),
                                    tuple(p[0] for p in picked), tuple(p[2] for p in picked)))
    return chapters


def speech_extent(samples: np.ndarray) -> tuple[int, int]:
    """(first, end) sample of the speech in one utterance: from the first to the last run of ``ONSET_FRAMES`` 20-ms
    frames within ``ONSET_DB`` of its loudest frame; the whole file when none is (a silent file)."""
    n = len(samples) // FRAME
    if n < ONSET_FRAMES or not np.any(samples):
        return 0, len(samples)
    frames = samples[:n * FRAME].astype(np.float64).reshape(n, FRAME)
    db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-3)  # int16 units: the floor is far below any speech
    loud = db > db.max() - ONSET_DB
    runs = np.flatnonzero(np.convolve(loud, np.ones(ONSET_FRAMES, dtype=int), "valid") == ONSET_FRAMES)
    if runs.size == 0:
        return 0, len(samples)
    return int(runs[0] * FRAME), int((runs[-1] + ONSET_FRAMES) * FRAME)


def chapter_seed(chapter: Chapter, variant: str) -> int:
    return zlib.crc32(f"{SEED}:{variant}:{chapter.name}".encode())


def stretch_plan(rng: np.random.Generator, utterances: int) -> list[tuple[int, str, int]]:
    """(junction, kind, samples) of each stretch, by junction; junction ``j`` lies before utterance ``j``."""
    junctions = utterances - 1
    kinds = [(kind, span) for kind in nonspeech.MAKERS for span in (SHORT_S, LONG_S)]
    count = min(STRETCHES, len(kinds), junctions)
    order = rng.permutation(len(kinds))[:count]
    plan = []
    for i, k in enumerate(order):
        lo, hi = 1 + i * junctions // count, 1 + (i + 1) * junctions // count
        kind, (short, long) = kinds[k]
        seconds = round(float(np.exp(rng.uniform(np.log(short), np.log(long)))), 2)
        plan.append((int(rng.integers(lo, hi)), kind, int(round(seconds * SAMPLE_RATE))))
    return plan


def _pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def build_file(chapter: Chapter, audio_path: Path, variant: str = "plain",
               plan: list[tuple[int, str, int]] | None = None) -> LongformReference:
    """Write ``chapter``'s long-form FLAC to ``audio_path`` block by block and return its reference.

    ``plan``: the hard variant's stretches as ``stretch_plan`` gives them, ``(junction, kind, samples)``, to build a
    file with other stretches than the seeded draw (a short test file); None: the draw."""
    import soundfile as sf

    if variant not in VARIANTS:
        raise WhisperoptError(f"unknown long-form variant {variant!r}; known: {', '.join(VARIANTS)}")
    if plan is not None and variant != "hard":
        raise WhisperoptError("stretches are inserted in the hard variant only")
    seed = chapter_seed(chapter, variant) if variant == "hard" else None
    if plan is None and seed is not None:
        plan = stretch_plan(np.random.default_rng(seed), len(chapter.files))
    plan = {j: (kind, n) for j, kind, n in plan or ()}
    utts, stretches, pos = [], [], 0
    with sf.SoundFile(str(audio_path), "w", SAMPLE_RATE, 1, "PCM_16", format="FLAC") as out:
        for j, (rel, uid, text) in enumerate(zip(chapter.files, chapter.ids, chapter.texts)):
            if j in plan:
                kind, n = plan[j]
                samples, detail = nonspeech.MAKERS[kind](np.random.default_rng([seed, j]), n)
                out.write(_pcm16(samples))
                stretches.append(Stretch(kind, pos / SAMPLE_RATE, (pos + n) / SAMPLE_RATE, detail))
                pos += n
            speech, rate = sf.read(str(chapter.root / rel), dtype="int16")
            if rate != SAMPLE_RATE or speech.ndim != 1:
                raise WhisperoptError(f"{chapter.root / rel}: not 16 kHz mono (LibriSpeech files are)")
            if not speech.any():  # dev-clean's speaker 84 here: transcripts with no audio behind them
                raise SilentSource(f"{uid} is digital silence")
            first, end = speech_extent(speech)
            out.write(speech)
            utts.append(SpokenSpan(uid, pos / SAMPLE_RATE, (pos + len(speech)) / SAMPLE_RATE,
                                   (pos + first) / SAMPLE_RATE, (pos + end) / SAMPLE_RATE, text))
            pos += len(speech)
    return LongformReference(chapter.name, pos / SAMPLE_RATE, tuple(utts), tuple(stretches), variant, seed,
                             chapter.files)


def source_key(chapters: list[Chapter], variant: str) -> str:
    """16 hex digits naming what the files are built from: every source's bytes and transcript, the builder."""
    h = hashlib.sha256(json.dumps({"builder": BUILDER_VERSION, "seed": SEED, "variant": variant,
                                   "stretches": [STRETCHES, SHORT_S, LONG_S, nonspeech.NOISE_DBFS,
                                                 nonspeech.MUSIC_DBFS]}).encode())
    for ch in chapters:
        for rel, uid, text in zip(ch.files, ch.ids, ch.texts):
            h.update(f"\n{ch.name} {uid} {rel} {text} {sha256_file(ch.root / rel)}".encode())
    return h.hexdigest()[:16]


def _split_root(split: str) -> Path:
    if split not in SPLITS:
        raise WhisperoptError(f"unknown LibriSpeech split {split!r}; known: {', '.join(SPLITS)}")
    root = find_librispeech_split(split)
    if root is not None:
        return root
    if split in LIBRISPEECH_SPLITS:
        return download_librispeech(split)
    raise WhisperoptError(f"LibriSpeech {split} is not available locally (it is Mini LibriSpeech, openslr 31); set "
                          f"WHISPEROPT_LIBRISPEECH to a directory holding LibriSpeech/{split}")


def parse_spec(spec: str) -> tuple[str, str]:
    """(split, variant) of ``librispeech-long:<split>[:hard]``; anything else is a one-line error."""
    split, _, variant = spec[len(PREFIX):].partition(":") if spec.startswith(PREFIX) else ("", "", "")
    variant = variant or "plain"
    if not split or variant not in VARIANTS:
        raise WhisperoptError(f"bad long-form dataset {spec!r}: give {PREFIX}<split> or {PREFIX}<split>:hard")
    return split, variant


def _build_all(folder: Path, split: str, variant: str, chapters: list[Chapter]) -> None:
    """Every chapter's FLAC and sidecar, then ``index.json`` (the files made, the chapters dropped), atomically."""
    with atomic_dir(folder) as tmp:
        made, silent = [], []
        for ch in chapters:
            try:
                ref = build_file(ch, tmp / f"{ch.name}.flac", variant)
            except SilentSource as exc:
                (tmp / f"{ch.name}.flac").unlink(missing_ok=True)
                silent.append(f"{ch.name} ({exc})")
                continue
            atomic_write_json(tmp / f"{ch.name}.json", {"builder": BUILDER_VERSION, "split": split,
                                                        "sample_rate": SAMPLE_RATE, **ref.to_dict()})
            made.append(ch.name)
        atomic_write_json(tmp / "index.json", {"builder": BUILDER_VERSION, "split": split, "variant": variant,
                                               "files": made, "silent": silent})


def load_longform(spec: str) -> Dataset:
    """The long-form dataset ``spec`` names, built into the cache the first time (see the module's docstring)."""
    split, variant = parse_spec(spec)
    root = _split_root(split)
    chapters = find_chapters(root)
    if not chapters:
        raise WhisperoptError(f"no chapter under {root} has {MIN_CHAIN} consecutive utterances to join into a "
                              "long-form file")
    folder = data_dir() / "librispeech-long" / split / f"{variant}-{source_key(chapters, variant)}"
    if not (folder / "index.json").is_file():
        _build_all(folder, split, variant, chapters)
    fix = f"delete {folder} to rebuild it"
    index = read_json(folder / "index.json", "long-form index", fix)
    utts = []
    for name in index.get("files", []):
        sidecar = confined(folder, f"{name}.json")
        ref = LongformReference.from_dict(read_json(sidecar, "long-form sidecar", fix), str(sidecar))
        utts.append(Utterance(ref.name, str(confined(folder, f"{name}.flac")), ref.text, "en", str(sidecar), ref))
    silent = tuple(index.get("silent", []))
    if not utts:
        raise WhisperoptError(f"no long-form file in {split}: every chapter with {MIN_CHAIN} consecutive utterances "
                              f"holds digital silence ({'; '.join(silent)})")
    suffix = "-hard" if variant == "hard" else ""
    return Dataset(f"librispeech-long-{split}{suffix}", utts, silent)
