"""The record of an exported directory (``whisperopt export``): its type (``ExportRecord``), its one writer and
reader (``write_export``, ``read_export``), and the check of its files before any is loaded.

``whisperopt_export.json`` lists every file of the export (root config, tokenizer and processor files, the fp32
weights where the recipe loads them, the artifact and its manifest, the benchmark evidence) with its size and
sha256, and the sha256 of that table itself (``files_sha256``), which the model card (``README.md``) states too.
Every load checks the table's digest against both, that every listed file is there with its size, and that the
folder holds no file the table does not list (hidden entries such as ``.git`` or ``.cache`` aside); ``--verify``
also hashes every file. This is integrity, not authenticity: whoever can rewrite the whole folder can rewrite the
table, its digest and the card to match other weights (README: Security).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TypedDict

from ..errors import WhisperoptError
from ..files import atomic_write_json, confined, sha256_file

EXPORT_RECORD = "whisperopt_export.json"  # marks a directory written by `whisperopt export`
CARD = "README.md"
UNLISTED = (EXPORT_RECORD, CARD)  # the two files the table cannot hold (they hold the table's digest)
CARD_DIGEST_LINE = "File table sha256 (`files_sha256` in `whisperopt_export.json`): `{}`"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class SourceModel(TypedDict, total=False):
    """The checkpoint an export's artifact was built from."""

    spec: str  # the bench's --model
    source: str | None  # where it was resolved from
    path: str
    fingerprint: str | None  # cache.model_fingerprint
    hub_id: str | None  # None for synthetic weights
    synthetic: bool
    license: str | None  # "mit" for OpenAI's and distil-whisper's checkpoints, else not recorded
    multilingual: bool
    languages: list[str]


class ExportBenchmark(TypedDict, total=False):
    """The benchmark an export was measured in: its summary row as summary.json holds it (``report.records``)."""

    results_dir: str
    dataset: dict  # spec and limit, and the environment's dataset record (name, utterances, total_s)
    row: dict  # this recipe's summary row (report.records.SummaryRow)
    baseline_recipe: str | None
    baseline_row: dict | None  # the baseline's row (None: this recipe is the baseline, or the baseline did not run)
    recommendation: dict | None  # the run's recommendation (report.records.Recommendation)
    recommended: bool
    units: dict | None
    bootstrap: dict | None
    fidelity_utterances: int | None


class ExportBuild(TypedDict, total=False):
    built_at: str | None
    build_seconds: float | None
    validation: dict | None  # the build check's figures against fp32
    fields: dict  # what the build recorded about the artifact (quantisation, file names), bookkeeping left out


class ExportRecord(TypedDict, total=False):
    """``whisperopt_export.json``: written once by ``export.bundle`` (``write_export``), read by everything that
    loads or describes an export (``read_export``: the model resolver, the exported recipe, the bench, the card)."""

    format: str  # export.bundle.EXPORT_FORMAT
    recipe: str
    engine: str
    description: str
    options: dict  # the recipe's options as benchmarked
    weight_bits: int
    artifact: str  # the artifact's folder, relative to the export
    loads_source_weights: bool
    source_model: SourceModel
    benchmark: ExportBenchmark
    decode: dict  # {"bench": the bench's decode settings, "engine": what the engine ran with}
    environment: dict  # the bench's environment.json, model and dataset aside
    versions: dict  # {"whisperopt": ..., "built_with": the artifact's build versions}
    build: ExportBuild
    exported_at: str
    files: dict[str, dict]  # every file the export wrote but this record and the card: {"bytes", "sha256"}
    files_sha256: str  # table_digest(files), which the card states too


def write_export(path: Path, record: ExportRecord) -> None:
    """``path``/whisperopt_export.json (``path``: the export being written)."""
    atomic_write_json(Path(path) / EXPORT_RECORD, record)


def read_export(path: Path, whole: bool = True) -> ExportRecord:
    """The record ``whisperopt export`` wrote into ``path``; an unreadable one (not UTF-8 JSON) is a one-line error,
    and so, with ``whole``, is one without its recipe, artifact folder or options (without: any object it holds, {}
    for anything else, for a reader that goes by its file table alone, ``export.target``)."""
    record_file = Path(path) / EXPORT_RECORD
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WhisperoptError(f"{record_file} is unreadable ({type(exc).__name__}); export the model again") from None
    if not whole:
        return record if isinstance(record, dict) else {}
    if not isinstance(record, dict) or not isinstance(record.get("recipe"), str) \
            or not isinstance(record.get("artifact"), str) or not isinstance(record.get("options", {}), dict):
        raise WhisperoptError(f"{record_file} is not a whisperopt export record; export the model again")
    return record


def table_digest(files: dict) -> str:
    """sha256 of the file table as canonical JSON (keys sorted, no spaces): what ``files_sha256`` records."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_table(path: Path, record: ExportRecord) -> dict[str, dict]:
    """The record's file table, each name confined to ``path`` and each entry a size and a sha256; anything else
    is a one-line error."""
    files = record.get("files")
    where = Path(path) / EXPORT_RECORD
    if not isinstance(files, dict) or not files:
        raise WhisperoptError(f"{where} has no file table; export the model again")
    for rel, entry in files.items():
        try:
            confined(path, rel)
        except WhisperoptError as exc:
            raise WhisperoptError(f"{where} lists a file outside the export: {exc}") from None
        if rel in UNLISTED or not isinstance(entry, dict) or type(entry.get("bytes")) is not int \
                or not isinstance(entry.get("sha256"), str) or not _HEX64.fullmatch(entry["sha256"]):
            raise WhisperoptError(f"{where}: the entry of {rel!r} is not a file size and sha256; export the model "
                                  "again")
    return files


def on_disk(path: Path) -> tuple[set[str], list[str]]:
    """(every file under ``path`` as a relative name, the links and other non-files among them); links are never
    followed (an export holds copies only)."""
    files, odd = set(), []
    for top, dirs, names in os.walk(path):
        for name in dirs + names:
            p = Path(top) / name
            rel = p.relative_to(path).as_posix()
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                odd.append(rel)
            elif name in names:
                files.add(rel)
        dirs[:] = [d for d in dirs if not (Path(top) / d).is_symlink()]
    return files, odd


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def check_export(path: Path, record: ExportRecord, digests: bool = False) -> None:
    """Refuse, in one line, an export whose files are not the ones its record lists: the table's digest must be
    the one the record and the card state, every listed file there with its size (with ``digests``: its sha256),
    and nothing else in the folder but hidden entries."""
    path = Path(path)
    files = file_table(path, record)
    digest = table_digest(files)
    if record.get("files_sha256") != digest:
        raise WhisperoptError(f"{path / EXPORT_RECORD}: the file table does not match its recorded digest "
                              "(files_sha256); export the model again")
    try:
        card = (path / CARD).read_text(encoding="utf-8", errors="replace")
    except OSError:
        raise WhisperoptError(f"{path / CARD} (the model card, which states the file table's digest) is missing or "
                              "unreadable; export the model again") from None
    if CARD_DIGEST_LINE.format(digest) not in card:
        raise WhisperoptError(f"{path / CARD} does not state the file table's digest {digest[:16]}…: the card and "
                              f"{EXPORT_RECORD} disagree; export the model again")
    present, odd = on_disk(path)
    extra = sorted(rel for rel in present - set(files) - set(UNLISTED) if not _hidden(rel))
    odd = [rel for rel in odd if not _hidden(rel)]
    if odd or extra:
        raise WhisperoptError(f"{path} holds {'a link or special file' if odd else 'a file its table does not list'}"
                              f" ({(odd or extra)[0]}); an export holds only the files it lists: export the model "
                              "again")
    for rel, want in files.items():
        p = path / rel
        if not p.is_file():
            raise WhisperoptError(f"exported file {rel} is missing; export the model again")
        size = p.stat().st_size
        if size != want["bytes"]:
            raise WhisperoptError(f"exported file {rel} has {size} bytes, the export wrote {want['bytes']}; export "
                                  "the model again")
        if digests and sha256_file(p) != want["sha256"]:
            raise WhisperoptError(f"exported file {rel} has other bytes than the export wrote (sha256 differs); "
                                  "export the model again")
