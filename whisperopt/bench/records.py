"""The records a bench's processes hand each other, typed: a worker's result (``bench.worker`` to ``steps.run_worker``,
across a process or a Ray task) and a recipe's status (``<recipe>.status.json``: ``steps`` writes it; the resume test,
``report/`` and ``export/`` read it).

Both are JSON objects whose keys depend on the step, the engine and the passes asked for, so each is a ``TypedDict``
(as ``recipes.base.RunInfo``, whose keys both carry), with its one writer and its one reader here; on disk they are
the plain JSON objects they always were.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

from ..errors import WhisperoptError
from ..files import atomic_write_json
from ..recipes.base import RunInfo
from .results import status_problem


class BuildFigures(TypedDict, total=False):
    """What a build worker returns (``worker.do_build``), and a status file holds of its recipe's build."""

    artifact_dir: str
    cache_hit: bool
    build_s: float
    size_bytes: int | None
    manifest: dict  # the artifact's manifest (recipes.artifacts.MANIFEST): integrity table, components, versions
    notes: list[str]  # what the build logged (cache misses, rebuilds)


class RunFigures(RunInfo, total=False):
    """What a run worker measured (``worker.do_run``; over shards: ``steps.merged_result``): its resource segment,
    the settings the engine ran with (``RunInfo``), the fidelity probes and the extra passes."""

    utterances: int  # measured by this process (merged: by every shard)
    resumed_from: int  # rows already on disk when it started
    load_s: float
    load_peak_ram_mb: float | None
    peak_ram_mb: float | None
    run_ram_mb: float | None
    peak_vram_mb: float | None
    cpu_s: float
    wall_s: float
    fidelity_method: str
    window: str  # the encoder window it ran with (data.features.window_frames)
    throughput: list[dict]  # --throughput-batches: per batch size (batch, wall_s, rtfx, run_ram_mb, same_text ...)
    packed: dict  # --pack: the packed pass (gap_s, rtfx, windows, wer_delta ...; or skipped)
    encoder_rel_error: float | None  # the fidelity probes (recipes.validation.compare)
    encoder_rel_error_max: float | None
    teacher_forced_agreement: float | None
    teacher_forced_positions: int
    fidelity_note: str


class WorkerResult(BuildFigures, RunFigures, total=False):
    """A worker step's result: ``ok`` with the step's figures, or ``ok`` False with ``error``."""

    ok: bool
    error: str
    crashed: bool  # the process died without writing a result (a --ray task is then retried)
    traceback: str  # an unexpected exception's
    reference_ids: list[str]  # a reference worker's: the utterances it stored probe outputs of
    where: str  # a failed --ray build: "on node NAME"
    log: str  # a --ray task's: the tail of its worker's log, copied into the recipe's log here
    node: str  # a --ray task's node
    node_id: str


def failure(error: str, crashed: bool = False, **extra) -> WorkerResult:
    """A failed step's result (``crashed``: its process died without writing one)."""
    return WorkerResult(ok=False, error=error, **({"crashed": True} if crashed else {}), **extra)


def write_result(path: Path, result: WorkerResult) -> None:
    """The worker's side: its result, written once as it exits."""
    atomic_write_json(path, result)


def read_result(path: Path) -> WorkerResult | None:
    """The runner's side: the result a worker wrote (None: it wrote none, so it died first)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return failure(f"worker result {path} is unreadable ({type(exc).__name__})")
    return result if isinstance(result, dict) else failure(f"worker result {path} is not an object")


class RecipeStatus(RunFigures, total=False):
    """A recipe's ``<recipe>.status.json``: skipped (``reason``), failed (``stage``, ``error``), or ok with its build
    and the run's figures (``RunFigures``); ``steps.status_record`` writes it in this order."""

    recipe: str
    status: str  # ok | failed | skipped
    reason: str  # skipped: why it cannot run here
    stage: str  # failed: build | run | status (the file was damaged)
    error: str
    engine: str
    options: dict  # the recipe's resolved options
    artifact_dir: str
    size_bytes: int | None
    build_s: float
    cache_hit: bool
    manifest: dict
    description: str
    baseline: bool
    component_baseline: str | None
    ray: dict  # --ray: {"nodes": [...], "shards": n}


def skipped_status(recipe: str, reason: str) -> RecipeStatus:
    return RecipeStatus(recipe=recipe, status="skipped", reason=reason)


def failed_status(recipe: str, stage: str, error: str) -> RecipeStatus:
    return RecipeStatus(recipe=recipe, status="failed", stage=stage, error=error)


def write_status(path: Path, status: RecipeStatus) -> None:
    atomic_write_json(path, status)


def read_status(path: Path, expect: str | None = None) -> RecipeStatus:
    """A recipe's status file: {} when there is none; a damaged one (torn, empty, not JSON) reads as a failure
    saying so, and the next bench run measures that recipe again (its saved rows are kept). ``expect``: the recipe
    it must be the status of, for a reader that uses its figures (the report): the fields it uses of the types it
    needs (``results.STATUS_FIELDS``), else a one-line error naming the file."""
    try:
        status = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        status = f"{type(exc).__name__}"
    if not (isinstance(status, dict) and isinstance(status.get("status"), str)):
        why = status if isinstance(status, str) else "not a status"
        return failed_status(Path(path).name.removesuffix(".status.json"), "status",
                             f"status file {path} is damaged ({why}); re-run the bench to measure it again")
    problem = status_problem(status, expect) if expect is not None else None
    if problem:
        raise WhisperoptError(f"status file {path} is not a whisperopt status ({problem}); delete it and re-run the "
                              "bench to measure that recipe again (its rows are kept)")
    return status


class LongRunRecord(TypedDict, total=False):
    """A long-form run's own figures, without its files (``longform.LongformRun.record``): the worker writes it beside
    the run's transcripts, and the runner reads it back (``LongformRun.from_record``) to score the files again."""

    recipe: str
    mode: str  # longform.MODES
    dataset: str
    settings: dict  # the TranscribeOptions the mode ran with (native: the engine's own)
    threads: int
    device: str
    load_s: float | None
    peak_ram_mb: float | None
    resumed: int  # files already decoded when the process started
    own_settings: str | None  # a peer pipeline's own settings (the row is labelled, never recommended)
    skipped: str  # instead of the figures: why the run did not happen


class LongRow(TypedDict, total=False):
    """One recipe in one long-form mode over one long-form dataset (``LongformRun.to_row``; a skipped run has only
    recipe, mode, status and reason): rates and deltas in percent (points), times in seconds, memory in MiB."""

    recipe: str
    mode: str
    workload: str  # "long"
    dataset: str
    status: str  # ok | skipped
    reason: str
    files: int
    audio_s: float
    eval_s: float
    rtfx: float | None
    wer: float | None
    wer_ci: list[float] | None
    cer: float | None
    cer_ci: list[float] | None
    insertions: int
    stretch_words: int  # words emitted inside inserted non-speech stretches
    stretch_words_by_kind: dict[str, int]
    stretch_seconds: float
    stretch_words_per_min: float | None
    loops: int
    loop_extra_words: int
    start_error_median_s: float | None
    start_error_p90_s: float | None
    load_s: float | None
    peak_ram_mb: float | None
    run_ram_mb: float | None
    cpu_percent: float | None
    threads: int
    device: str
    resumed_files: int
    own_settings: str | None
    settings: dict
    per_file: list[dict]  # longform.FileResult.to_row, one per file
    # paired against the reference row (longform.paired_fields), None without one
    wer_delta: float | None
    wer_delta_ci: list[float] | None
    wer_delta_significant: bool | None
    cer_delta: float | None
    cer_delta_ci: list[float] | None
    cer_delta_significant: bool | None
    paired_files: int | None
    speedup: float | None
    stretch_words_change: float | None
    reference: str | None  # "<recipe> <mode>"


class LongDataset(TypedDict):
    """One long-form dataset's block of ``longform.json`` (``longform_runner``): its rows and what they ran on."""

    spec: str  # as --dataset named it
    files: int
    reference: str | None  # the row every delta is paired with ("<baseline> sequential"), None if it did not run
    audio_min: float
    stretch_min: float
    rows: list[LongRow]
