"""The benchmark runner: checks the bench's settings, data and results directory, records the environment, then runs
the bench's steps (``steps.run_steps``) with the local executor or, with ``--ray``, the Ray one. It knows no engine."""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from ..cache import cache_dir
from ..data import load_dataset
from ..errors import WhisperoptError
from ..files import atomic_write_json, dist_version, json_text, read_json, write_failure
from ..metrics.hardware import cpu_info
from ..metrics.roofline import PEAKS_METHOD, peaks_text, probe_peaks
from ..models import resolve_model
from ..models.resolve import exported_recipe, read_export
from ..models.vocabulary import Vocabulary, resolve_language
from ..recipes import baseline_recipe, get_recipe
from .config import BenchConfig, save_run
from .distributed import RayExecutor
from .environment import environment
from .local import LocalExecutor
from .results import ResultsLock
from .steps import REFERENCE_FILE, run_steps
from .worker import WorkerJob


class _Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP, handled like Ctrl-C: workers stopped, completed rows kept."""


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


# the peaks are a property of the machine: probed at most once per PEAKS_MAX_AGE_S per CPU, thread count and torch
# version, and kept in the cache (a probe takes seconds, and a bench run on a busy machine would judge its rows against
# a low peak); delete the file, or wait a day, to probe again
PEAKS_MAX_AGE_S = 24 * 3600


def _machine_peaks_file(threads: int) -> Path:
    import hashlib

    key = json_text({"cpu": cpu_info(), "threads": threads, "torch": dist_version("torch"), "method": PEAKS_METHOD})
    return cache_dir() / "machine" / f"peaks-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _kept_peaks(path: Path, threads: int) -> dict | None:
    try:
        kept = read_json(path, "peaks record", "") if path.exists() else None
    except (WhisperoptError, OSError):
        return None
    if isinstance(kept, dict) and isinstance(kept.get("peaks"), dict) and kept["peaks"].get("threads") == threads:
        return kept
    return None


def _peaks(out_dir: Path, threads: int, log) -> dict:
    """The machine's GEMM and bandwidth peaks for the roofline columns: once per results directory (a resumed run
    keeps the first run's figures, so every row is judged against the same peaks), taken from this machine's record
    in the cache when it is younger than a day, else probed and recorded there."""
    kept = _kept_peaks(out_dir / "environment.json", threads)
    if kept:
        return kept["peaks"]
    machine = _machine_peaks_file(threads)
    record = _kept_peaks(machine, threads)
    if record and 0 <= time.time() - float(record.get("probed_at", 0)) < PEAKS_MAX_AGE_S:
        log(f"peaks (probed {time.strftime('%Y-%m-%d %H:%M', time.localtime(record['probed_at']))}, kept in "
            f"{machine}): {peaks_text(record['peaks'])}")
        return record["peaks"]
    peaks = probe_peaks(threads)
    log(f"peaks: {peaks_text(peaks)}")
    try:
        machine.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(machine, {"probed_at": time.time(), "peaks": peaks})
    except OSError:  # a read-only cache: the next run probes again
        pass
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
    base_job = WorkerJob(model_dir=str(model.path), synthetic=model.synthetic, dataset=cfg.dataset, limit=cfg.limit,
                   verify=cfg.verify,
                   decode=cfg.decode.to_dict(), threads=cfg.threads, device=cfg.device, warmup=cfg.warmup,
                   fidelity_utterances=cfg.fidelity_utterances, reference_path=str(out_dir / REFERENCE_FILE),
                   throughput_batches=list(cfg.throughput_batches), pack_gap=cfg.pack_gap if cfg.pack else None)
    log(f"model {model.spec} ({model.source or model.path}); dataset {dataset.name}: "
        f"{stats['utterances']} utterances, {stats['total_s'] / 60:.1f} min; {cfg.threads} threads on {cfg.device}")
    executor = RayExecutor if cfg.ray is not None else LocalExecutor  # Ray: the same steps over a cluster's nodes
    run_steps(executor(cfg, out_dir, progress, log), recipes, options, dataset, base_job)
    return out_dir
