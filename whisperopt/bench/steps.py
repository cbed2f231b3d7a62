"""The steps of a bench, one home, whatever runs them: ``local.LocalExecutor`` (worker subprocesses here, one recipe
after another) or ``distributed.RayExecutor`` (the same worker processes as Ray tasks over a cluster's nodes).

1. available: a recipe that cannot run here is recorded as skipped, with its reason;
2. build: every other recipe's artifact (``Executor.build``); a failed build is recorded;
3. reference: the baseline's probe outputs on this machine's CPU, once per results directory (fidelity columns);
4. run: each recipe not already measured (the resume test) is measured (``Executor.measure``: one worker for all
   its utterances, or shards and then a final task for the probes and passes that need every row);
5. status: each recipe's status record, written once as its measurement ends.

The work of every step happens in a worker process (``bench.worker``), started by ``run_worker``; the two executors
differ only in where those processes run and how their results come back (an interface like optimum-benchmark's
launchers: one small class per way of running, neither importing the other).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..recipes import Recipe, baseline_recipe
from ..recipes.validation import stored_baseline_reference
from .records import (
    RecipeStatus,
    WorkerResult,
    failed_status,
    failure,
    read_result,
    read_status,
    skipped_status,
    write_status,
)
from .results import read_rows, recipe_paths, repair_rows
from .worker import WorkerJob

REFERENCE_FILE = "fidelity_reference.npz"
# the keys of a run worker's result that describe its resource slice (not the final task's: it measures nothing)
SLICE_KEYS = ("utterances", "resumed_from", "load_s", "load_peak_ram_mb", "peak_ram_mb", "run_ram_mb",
                "peak_vram_mb", "cpu_s", "wall_s")


# ---- one worker step in its own process (every executor's unit of work)

def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate a worker, and kill it if it has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _deaf():
    """SIGINT, SIGTERM and SIGHUP ignored for the block (main thread only), their handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("PYTHONWARNINGS", "ignore")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_worker(mode: str, job: WorkerJob, log: Path, env: dict, poll: Callable[[], None] | None = None) -> WorkerResult:
    """Run one worker step; return its result (``ok`` False with ``error`` on any failure, kill included)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="whisperopt-job-") as tmp:
        job = replace(job, result_path=str(Path(tmp) / "result.json"))
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job.to_dict()))
        with open(log, "a", encoding="utf-8") as logf:
            logf.write(f"\n=== {mode} {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
            logf.flush()
            proc = subprocess.Popen([sys.executable, "-m", "whisperopt.bench.worker", mode, str(job_file)],
                                    stdout=logf, stderr=subprocess.STDOUT, env=env)
            try:
                while proc.poll() is None:
                    if poll:
                        poll()
                    time.sleep(0.25)
            except BaseException:  # Ctrl-C, SIGTERM/SIGHUP (see run_bench): never leave a worker behind
                with _deaf():  # a second Ctrl-C must not cut the stopping short
                    _stop(proc)
                raise
        result = read_result(Path(job.result_path))
        if result is None and proc.returncode < 0:  # crashed: no result of its own (a --ray task is retried)
            sig = -proc.returncode
            result = failure("killed by SIGKILL (out of memory?)" if sig == 9 else f"killed by signal {sig}",
                             crashed=True)
        elif result is None:
            result = failure(f"worker exited with code {proc.returncode} (see {log})", crashed=True)
    if poll:
        poll()
    return result


# ---- the executor interface

@dataclass
class RecipeRun:
    """One recipe to measure (step 4): its build, its results files, and the utterances still to measure."""

    recipe: Recipe
    options: dict
    built: WorkerResult  # the build worker's result (artifact_dir, size_bytes, manifest ...)
    paths: dict  # bench.results.recipe_paths
    job: WorkerJob  # the bench's job for this recipe (no artifact or results file: those are where it runs)
    wanted: list[str]  # the dataset's utterance ids, in order
    done: set[str]  # those already measured (rows on disk)
    bar: Any = None  # its progress bar, if the bench shows progress

    def worker_job(self) -> WorkerJob:
        """The run worker's job on this machine: this artifact, this results directory's rows and slices."""
        return replace(self.job, artifact_dir=self.built["artifact_dir"], rows_path=str(self.paths["rows"]),
                       slices_path=str(self.paths["slices"]))


@dataclass
class Outcome:
    """A recipe's measurement as an executor hands it back: the worker's result (``ok`` with its figures, or ``ok``
    False with ``error``) and the executor's own record (Ray: nodes and shards), for its status."""

    run: RecipeRun
    result: WorkerResult
    extra: dict = field(default_factory=dict)


class Executor(ABC):
    """How a bench's worker steps run. ``build`` and ``measure`` yield as each recipe's work ends, so every record is
    written (and every failure logged) the moment it is known."""

    def __init__(self, cfg, out_dir: Path, progress, log: Callable[[str], None]):
        self.cfg, self.out_dir, self.progress, self.log = cfg, Path(out_dir), progress, log

    def start(self) -> None:
        """Before the first step (Ray: connect to the cluster)."""

    @abstractmethod
    def build(self, jobs: list[tuple[Recipe, WorkerJob]]) -> Iterator[tuple[Recipe, WorkerResult]]:
        """Build each recipe's artifact; yield (recipe, the build worker's result). A failure is ``ok`` False with
        ``error``, and ``where`` when it happened somewhere other than here (``on node NAME``)."""

    @abstractmethod
    def measure(self, runs: Iterable[RecipeRun]) -> Iterator[Outcome]:
        """Measure each run's remaining utterances, then its probes and extra passes; yield its ``Outcome``."""


# ---- the steps

def available(recipes, device: str, out_dir: Path, log) -> list:
    """The recipes that can run on ``device`` here; each other one is recorded as skipped, with its reason."""
    out = []
    for recipe in recipes:
        reason = recipe.unavailable_reason(device)
        if reason:
            log(f"skip  {recipe.name}: {reason}")
            write_status(recipe_paths(out_dir, recipe.name)["status"], skipped_status(recipe.name, reason))
        else:
            out.append(recipe)
    return out


def _built(recipe: Recipe, built: WorkerResult, out_dir: Path, log) -> bool:
    """Whether a build succeeded; a failed one is logged and recorded as the recipe's status."""
    if built.get("ok"):
        return True
    where = built.get("where")
    log(f"fail  {recipe.name} (build{' ' + where if where else ''}): {built['error']}")
    write_status(recipe_paths(out_dir, recipe.name)["status"], failed_status(
        recipe.name, "build", f"build {where}: {built['error']}" if where else built["error"]))
    return False


def make_reference(cfg, job: WorkerJob, out_dir: Path, log) -> None:
    """The baseline's encoder outputs and teacher-forced tokens, on this machine's CPU, once per results directory."""
    if (out_dir / REFERENCE_FILE).exists():
        return
    log(f"reference: {baseline_recipe().name} encoder outputs and teacher-forced tokens on "
        f"{cfg.fidelity_utterances} utterances")
    kept = stored_baseline_reference(Path(job.model_dir), **job.probes())
    if kept is not None:  # computed by an earlier process for this model: no worker needed to copy it
        kept.save(out_dir / REFERENCE_FILE)
        return
    ref = run_worker("reference", job, out_dir / "logs" / "reference.log", worker_env(cfg.threads))
    if not ref.get("ok"):
        log(f"warn  fidelity reference failed: {ref['error']}")


def pending_run(recipe: Recipe, built: WorkerResult, options: dict, job: WorkerJob, wanted: list[str], cfg, out_dir: Path,
                progress, log) -> RecipeRun | None:
    """The resume test: the recipe's run if anything is left to measure (utterances, or an extra pass this run asks
    for, or a status that is not ok), else None (logged)."""
    paths = recipe_paths(out_dir, recipe.name)
    repair_rows(paths["rows"])  # a torn last row (killed mid-write) is dropped and measured again
    done = {r["id"] for r in read_rows(paths["rows"])} & set(wanted)
    previous = read_status(paths["status"])  # a damaged one reads as failed: measured again
    if len(done) == len(wanted) and previous.get("status") == "ok" and cfg.extra_passes_done(previous):
        log(f"done  {recipe.name}: all {len(wanted)} utterances already measured (delete its rows to re-measure)")
        return None
    bar = progress.add_task(recipe.name, total=len(wanted), completed=len(done)) if progress else None
    return RecipeRun(recipe, options, built, paths, job, wanted, done, bar)


def merged_result(shards: list[WorkerResult], final: WorkerResult | None) -> WorkerResult:
    """One result from a recipe's shard results and its final task's (which measured nothing, so its resource
    figures are left out): what a single run worker over every utterance returns."""
    info: WorkerResult = {}
    for result in shards + ([final] if final else []):
        extra = {k: v for k, v in result.items() if k != "ok"}
        if result is final:
            extra = {k: v for k, v in extra.items() if k not in SLICE_KEYS}
        info.update(extra)
    info["utterances"] = sum(r.get("utterances", 0) for r in shards)
    return {"ok": True, **info}


def status_record(outcome: Outcome) -> RecipeStatus:
    """A recipe's status: its build, then its run's figures (or why it failed), then the executor's record."""
    run, result = outcome.run, outcome.result
    recipe, built = run.recipe, run.built
    status = RecipeStatus(recipe=recipe.name, engine=recipe.engine, options=run.options,
                          artifact_dir=built["artifact_dir"], size_bytes=built["size_bytes"],
                          build_s=built["build_s"], cache_hit=built["cache_hit"],
                          manifest=built["manifest"], description=recipe.description,
                          baseline=recipe.baseline, component_baseline=recipe.component_baseline)
    if result.get("ok"):
        status.update(status="ok", **{k: v for k, v in result.items() if k != "ok"})
    else:
        status.update(status="failed", stage="run", error=result["error"])
    status.update(outcome.extra)
    return status


def run_steps(executor: Executor, recipes: list[Recipe], options: dict, dataset, job: WorkerJob) -> None:
    """Steps 1-5 (see the module's docstring) with ``executor``; ``job``: the bench's worker job, no recipe yet."""
    cfg, out_dir, log = executor.cfg, executor.out_dir, executor.log
    executor.start()
    jobs = [(r, replace(job, recipe=r.name, options=options[r.name]))
            for r in available(recipes, cfg.device, out_dir, log)]
    live = [(recipe, built) for recipe, built in executor.build(jobs) if _built(recipe, built, out_dir, log)]
    if live and cfg.fidelity_utterances:
        make_reference(cfg, job, out_dir, log)
    wanted = [u.id for u in dataset.utterances]
    recipe_jobs = {recipe.name: recipe_job for recipe, recipe_job in jobs}
    runs = (run for recipe, built in live
            if (run := pending_run(recipe, built, options[recipe.name], recipe_jobs[recipe.name], wanted, cfg,
                                   out_dir, executor.progress, log)) is not None)
    for outcome in executor.measure(runs):  # lazily: a local bench tests each recipe for resume as it comes to it
        write_status(outcome.run.paths["status"], status_record(outcome))
