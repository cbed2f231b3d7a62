"""The records the report writes, typed: a results folder's summary (``summary.json``: ``Summary``, one ``SummaryRow``
per recipe, the ``Recommendation``; a folder holding the long-form workload alone: ``LongSummary``, one
``LongRecommendation`` per long-form dataset). The report builds them (``summary.summarise``,
``recommend.recommend``, ``recommend.recommend_long``), ``write_summary`` writes them, and whatever reads them back
(``export``, a long-form folder written before ``longform.json``) reads them with ``read_summary``.

Each is a ``TypedDict``: a JSON object with keys a reader may find missing (a summary written by an older whisperopt,
a row of a recipe that did not run), read by key as summary.json's other readers (tests, scripts) read it; on disk
they are the plain JSON objects they always were.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from ..bench.records import LongDataset
from ..errors import WhisperoptError
from ..files import atomic_write_json, read_json

SUMMARY_FILE = "summary.json"


class SummaryRow(TypedDict, total=False):
    """One recipe's row (``summary.recipe_summary``, completed by ``summarise``); figures it has none of are None.
    Units: ``Summary.units`` (WER/CER in percent, deltas in percentage points, times in s, memory in MiB)."""

    recipe: str
    status: str  # ok | failed | skipped | not run
    reason: str | None  # why it is not ok
    utterances: int  # measured, of the run's
    expected_utterances: int
    complete: bool
    wer: float | None  # accuracy (summary.add_accuracy): None on synthetic weights
    wer_ci: list[float] | None
    wer_delta: float | None  # paired with the baseline, on the utterances both measured
    wer_delta_ci: list[float] | None
    wer_delta_significant: bool | None
    cer: float | None
    cer_ci: list[float] | None
    cer_delta: float | None
    cer_delta_ci: list[float] | None
    cer_delta_significant: bool | None
    paired_utterances: int | None
    eval_s: float  # speed: a batch's wall time counted once
    audio_s: float
    latency_p50_s: float | None
    latency_p90_s: float | None
    rtfx: float | None
    tokens: int
    tokens_per_s: float | None
    speedup: float | None  # eval time vs the baseline's, within one CPU model (hardware_note: how)
    hardware_note: str | None
    load_s: float | None  # resources (summary.resources): over every process that measured rows
    peak_ram_mb: float | None
    run_ram_mb: float | None
    peak_vram_mb: float | None
    cpu_percent: float | None
    processes: int
    size_mb: float | None  # weights on disk
    compression: float | None  # fp32 parameter bytes / weight bytes
    encoder_rel_error: float | None  # fidelity to the baseline (the status file's probes)
    teacher_forced_agreement: float | None
    fidelity_note: str | None
    fidelity_method: str | None
    not_comparable: str | None  # why its rows cannot be compared with the baseline's
    own_settings: str | None  # why it decoded with its own settings
    decode_settings: dict | None  # what the engine ran with (recipes.base.RunInfo)
    isa_path: dict | None  # metrics.isa.kernel_path
    roofline: dict | None  # metrics.roofline.roofline
    engine: str | None
    options: dict | None
    manifest: dict | None  # its artifact's manifest
    components: dict  # per-component weight bytes (summary.component_fields)
    component_ms: dict  # per-component median call times
    component_speedup: dict  # against the same loop's fp32: {"baseline", "encoder", "decoder", "whole"}
    throughput: list[dict]  # --throughput-batches: RTFx per batch size (summary.throughput_fields)
    best_batch: int
    rtfx_best: float
    throughput_gain: float | None
    packed: dict  # --pack: the packed pass as the worker wrote it (summary.packed_fields)
    packed_rtfx: float | None
    packed_gain: float | None
    packed_windows: int | None
    packed_wer_delta: float | None
    packed_wer_delta_ci: list[float] | None


class Recommendation(TypedDict, total=False):
    """The short-form recommendation (``recommend.recommend``): the winner's name and figures, or None with why."""

    recipe: str | None
    reason: str | None  # why there is none
    criterion: str
    basis: str  # wer | teacher_forced_agreement
    rank_by: str  # recommend.RANK_BY
    wer_budget: float
    min_agreement: float
    eval_s: float | None  # the winner's figures (recommend.FIGURES)
    speedup: float | None
    wer: float | None
    wer_delta: float | None
    wer_delta_ci: list[float] | None
    size_mb: float | None
    peak_ram_mb: float | None
    teacher_forced_agreement: float | None
    ranking: list[str]  # every eligible recipe, best first
    excluded: dict[str, str]  # why each other recipe is not


class LongRecommendation(TypedDict, total=False):
    """The long-form recommendation for one long-form dataset (``recommend.recommend_long``): recipe and mode."""

    recipe: str | None
    mode: str | None
    reason: str | None
    criterion: str
    basis: str
    rank_by: str
    wer_budget: float
    reference: str | None  # the row every ΔWER is paired with (the baseline in mode sequential)
    rtfx: float | None  # the winner's figures (recommend.LONG_FIGURES)
    speedup: float | None
    wer: float | None
    wer_delta: float | None
    wer_delta_ci: list[float] | None
    peak_ram_mb: float | None
    run_ram_mb: float | None
    stretch_words: int | None
    loops: int | None
    start_error_median_s: float | None
    ranking: list[str]  # by recommend.long_label
    excluded: dict[str, str]


class LongSummary(TypedDict, total=False):
    """The long-form workload (``longform.summarise_long``): ``longform.json`` as the long-form bench wrote it (one
    block of rows per dataset; ``report.longform`` reads and checks it), with its recommendations."""

    workload: str  # "long"
    model: str
    threads: int
    device: str
    cpu: str | None
    batch_size: int
    synthetic: bool
    baseline: str
    units: dict[str, str]
    bootstrap: dict
    datasets: dict[str, LongDataset]  # the long-form bench's block of rows per dataset
    budget: float
    rank_by: str
    recommendation: dict[str, LongRecommendation]
    headline: str


class Summary(TypedDict, total=False):
    """A results folder's summary (``summary.summarise``; ``workloads.summarise_results`` adds the workloads)."""

    config: dict  # run.json's settings (bench.config.BenchConfig.to_dict)
    environment: dict  # environment.json (CPU, versions, model, dataset, peaks)
    synthetic: bool
    baseline: str
    units: dict[str, str]
    bootstrap: dict
    recipes: list[SummaryRow]
    recommendation: Recommendation
    workload: str  # "short"
    headline: str  # the workload whose recommendation leads: short | long
    longform: LongSummary  # both workloads were run


def write_summary(out_dir: Path, summary: Summary | LongSummary) -> Path:
    """``out_dir``/summary.json."""
    path = Path(out_dir) / SUMMARY_FILE
    atomic_write_json(path, summary, default=str)
    return path


def read_summary(results_dir: Path, workload: str = "short") -> Summary | LongSummary:
    """``results_dir``/summary.json as ``write_summary`` wrote it, holding ``workload`` (short: its recipes' rows;
    long: the long-form workload alone); anything else is a one-line error saying how to rewrite it."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise WhisperoptError(f"results directory {results_dir} does not exist (give the --out of a `whisperopt bench` "
                              "run)")
    path = results_dir / SUMMARY_FILE
    if not path.is_file():
        raise WhisperoptError(f"{results_dir} holds no {SUMMARY_FILE}: run `whisperopt report {results_dir}` (or the "
                              "bench that writes it) first")
    summary = read_json(path, "benchmark summary", f"run `whisperopt report {results_dir}` to rewrite it")
    if workload == "long":
        ok = isinstance(summary, dict) and summary.get("workload") == "long"
    else:
        ok = isinstance(summary, dict) and isinstance(summary.get("recipes"), list) \
            and isinstance(summary.get("config"), dict)
    if not ok:
        what = "long-form summary" if workload == "long" else "benchmark summary"
        raise WhisperoptError(f"{path} is not a whisperopt {what}; run `whisperopt report {results_dir}` to rewrite "
                              "it")
    return summary
