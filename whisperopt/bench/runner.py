"""The benchmark runner: builds and runs every recipe in its own subprocess and knows no engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..data import load_dataset
from ..errors import WhisperoptError
from ..files import atomic_write_json, read_json, write_failure
from ..metrics.roofline import peaks_text, probe_peaks
from ..models import resolve_model
from ..models.resolve import exported_recipe, read_export
from ..models.vocabulary import Vocabulary, resolve_language
from ..recipes import baseline_recipe, get_recipe
from .config import BenchConfig, save_run
from .environment import environment
from .results import ResultsLock, read_rows, read_status, recipe_paths
from .worker import Job

REFERENCE_FILE = "fidelity_reference.npz"


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate a worker, and kill it if it has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP, handled like Ctrl-C: workers stopped, completed rows kept."""


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


@contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP raise in the main thread like SIGINT does, so every worker is stopped on the way out."""
    def handler(signum, frame):
        raise _Terminated(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise WhisperoptError(f"results directory {out_dir} is not writable: {exc.strerror or exc}") from None


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("PYTHONWARNINGS", "ignore")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_worker(mode: str, job: Job, log: Path, env: dict, poll: Callable[[], None] | None = None) -> dict:
    """Run one worker step; return its result dict (``ok`` False with ``error`` on any failure, kill included)."""
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
        result_file = Path(job.result_path)
        if result_file.exists():
            result = json.loads(result_file.read_text())
        elif proc.returncode < 0:  # crashed: no result of its own (a --ray task is retried on another try)
            sig = -proc.returncode
            why = "killed by SIGKILL (out of memory?)" if sig == 9 else f"killed by signal {sig}"
            result = {"ok": False, "error": why, "crashed": True}
        else:
            result = {"ok": False, "error": f"worker exited with code {proc.returncode} (see {log})", "crashed": True}
    if poll:
        poll()
    return result


def available(recipes, device: str, out_dir: Path, log) -> list:
    """The recipes that can run on ``device`` here; each other one is recorded as skipped, with its reason."""
    out = []
    for recipe in recipes:
        reason = recipe.unavailable_reason(device)
        if reason:
            log(f"skip  {recipe.name}: {reason}")
            atomic_write_json(recipe_paths(out_dir, recipe.name)["status"],
                              {"recipe": recipe.name, "status": "skipped", "reason": reason})
        else:
            out.append(recipe)
    return out


def run_bench(cfg: BenchConfig, progress=None, log: Callable[[str], None] = print) -> Path:
    """Run the benchmark described by ``cfg``; results land in ``cfg.out_dir``. Returns that directory."""
    cfg.validate()
    recipes = [get_recipe(name) for name in cfg.recipes]
    options = {r.name: r.resolve_options(cfg.recipe_options.get(r.name)) for r in recipes}
    unknown = set(cfg.recipe_options) - {r.name for r in recipes}
    if unknown:
        raise WhisperoptError(f"--option given for recipes not in --recipes: {', '.join(sorted(unknown))}")
    if exported_recipe(cfg.model) is not None:
        cfg = _exported_run(cfg, recipes, options, log)
    dataset = load_dataset(cfg.dataset).limit(cfg.limit)
    stats = dataset.stats()  # also proves every audio file is readable before any recipe starts
    out_dir = Path(cfg.out_dir)
    _check_writable(out_dir)
    try:
        with ResultsLock(out_dir), _signals_interrupt():  # one bench per results directory; workers die with us
            return _run(cfg, recipes, options, dataset, stats, out_dir, progress, log)
    except OSError as exc:  # the results directory filled up or became unwritable mid-run
        err = write_failure(exc, out_dir)
        if err is None:
            raise
        raise err from None


def _exported_run(cfg: BenchConfig, recipes, options: dict, log) -> BenchConfig:
    """An exported --model (``whisperopt export``) runs its own recipe alone, with the options it was built with. It
    holds no fp32 weights, so there is no baseline to compare with: WER is absolute (no ΔWER, no speed-up) and the
    fidelity probes (which need the fp32 reference) are off."""
    record = read_export(Path(cfg.model).expanduser())
    name, baseline = record["recipe"], baseline_recipe().name
    if [r.name for r in recipes] != [name]:
        raise WhisperoptError(f"{cfg.model} is a whisperopt export of {name}: bench runs that recipe alone (leave "
                              f"--recipes out, or give --recipes {name}); it holds no fp32 weights for a {baseline} "
                              "baseline")
    if options[name] != (record.get("options") or {}):
        raise WhisperoptError(f"{cfg.model} was exported with {name} options {record.get('options') or 'none'}; other "
                              "--option values need another build")
    log(f"exported model: {name} alone; no fp32 weights in the export, so no {baseline} baseline (WER absolute, no "
        "ΔWER or speed-up) and no fidelity probes")
    return replace(cfg, fidelity_utterances=0)


def _peaks(out_dir: Path, threads: int, log) -> dict:
    """The machine's GEMM and bandwidth peaks for the roofline columns: probed once per results directory (a resumed
    run keeps the first run's figures, so every row is judged against the same peaks)."""
    old = out_dir / "environment.json"
    try:
        kept = read_json(old, "environment record", "") if old.exists() else None
    except WhisperoptError:
        kept = None
    if isinstance(kept, dict) and isinstance(kept.get("peaks"), dict) and kept["peaks"].get("threads") == threads:
        return kept["peaks"]
    peaks = probe_peaks(threads)
    log(f"peaks: {peaks_text(peaks)}")
    return peaks


def _run(cfg: BenchConfig, recipes, options, dataset, stats, out_dir: Path, progress, log) -> Path:
    model = resolve_model(cfg.model)
    if cfg.decode.language is not None:  # a code the checkpoint lacks fails here, not in every engine
        resolve_language(cfg.decode.language, Vocabulary.from_model_dir(model.path))
    save_run(cfg)
    env = environment(cfg.threads, cfg.device)
    env["peaks"] = _peaks(out_dir, cfg.threads, log)
    atomic_write_json(out_dir / "environment.json", {
        **env, "dataset": {"name": dataset.name, **stats}, "baseline": baseline_recipe().name,
        "model": {"spec": model.spec, "path": str(model.path), "synthetic": model.synthetic, "source": model.source}})
    wenv = worker_env(cfg.threads)
    base_job = Job(model_dir=str(model.path), synthetic=model.synthetic, dataset=cfg.dataset, limit=cfg.limit,
                   verify=cfg.verify,
                   decode=cfg.decode.to_dict(), threads=cfg.threads, device=cfg.device, warmup=cfg.warmup,
                   fidelity_utterances=cfg.fidelity_utterances, reference_path=str(out_dir / REFERENCE_FILE),
                   throughput_batches=list(cfg.throughput_batches), pack_gap=cfg.pack_gap if cfg.pack else None)
    log(f"model {model.spec} ({model.source or model.path}); dataset {dataset.name}: "
        f"{stats['utterances']} utterances, {stats['total_s'] / 60:.1f} min; {cfg.threads} threads on {cfg.device}")

    def make_reference() -> None:  # 2. fidelity reference (the baseline on CPU, once per results directory)
        if (out_dir / REFERENCE_FILE).exists():
            return
        log(f"reference: {baseline_recipe().name} encoder outputs and teacher-forced tokens on "
            f"{cfg.fidelity_utterances} utterances")
        ref = run_worker("reference", base_job, out_dir / "logs" / "reference.log", wenv)
        if not ref.get("ok"):
            log(f"warn  fidelity reference failed: {ref['error']}")

    if cfg.ray is not None:  # the same steps as Ray tasks over a cluster's nodes
        from .distributed import run_on_ray

        run_on_ray(cfg, recipes, options, dataset, out_dir, base_job, make_reference, progress, log)
        return out_dir

    # 1. build (each in its own process; cached artifacts are reused)
    runnable = []
    for recipe in available(recipes, cfg.device, out_dir, log):
        paths = recipe_paths(out_dir, recipe.name)
        log(f"build {recipe.name} ...")
        built = run_worker("build", replace(base_job, recipe=recipe.name, options=options[recipe.name]),
                           paths["log"], wenv)
        if not built.get("ok"):
            log(f"fail  {recipe.name} (build): {built['error']}")
            atomic_write_json(paths["status"], {"recipe": recipe.name, "status": "failed", "stage": "build",
                                            "error": built["error"]})
            continue
        for note in built.get("notes", []):
            log(f"      {note}")
        how = "cached" if built["cache_hit"] else f"built in {built['build_s']:.1f} s"
        log(f"      {recipe.name}: {how} -> {built['artifact_dir']}")
        runnable.append((recipe, built))

    if runnable and cfg.fidelity_utterances:
        make_reference()

    # 3. run
    n_total = len(dataset)
    for recipe, built in runnable:
        paths = recipe_paths(out_dir, recipe.name)
        done = {r["id"] for r in read_rows(paths["rows"])} & {u.id for u in dataset.utterances}
        previous = read_status(paths["status"])  # a damaged one reads as failed: measured again
        if len(done) == n_total and previous.get("status") == "ok" and cfg.extra_passes_done(previous):
            log(f"done  {recipe.name}: all {n_total} utterances already measured (delete its rows to re-measure)")
            continue
        job = replace(base_job, recipe=recipe.name, options=options[recipe.name], artifact_dir=built["artifact_dir"],
                      rows_path=str(paths["rows"]), segments_path=str(paths["segments"]))
        task = progress.add_task(recipe.name, total=n_total, completed=len(done)) if progress else None

        def poll(rows=paths["rows"], task=task):
            if progress is not None:
                progress.update(task, completed=len(read_rows(rows)))

        result = run_worker("run", job, paths["log"], wenv, poll)
        status = {"recipe": recipe.name, "engine": recipe.engine, "options": options[recipe.name],
                  "artifact_dir": built["artifact_dir"], "size_bytes": built["size_bytes"],
                  "build_s": built["build_s"], "cache_hit": built["cache_hit"],
                  "manifest": built["manifest"], "description": recipe.description,
                  "baseline": recipe.baseline, "component_baseline": recipe.component_baseline}
        if result.get("ok"):
            status.update(status="ok", **{k: v for k, v in result.items() if k != "ok"})
        else:
            status.update(status="failed", stage="run", error=result["error"])
            log(f"fail  {recipe.name}: {result['error']}")
        atomic_write_json(paths["status"], status)
    return out_dir
