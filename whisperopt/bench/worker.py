"""One benchmark step in its own process: ``python -m whisperopt.bench.worker {build|reference|run} JOB.json``.

Isolation keeps each recipe's peak memory its own, lets a crash or an out-of-memory kill fail one recipe only, and
makes resuming trivial: every finished utterance is one fsync'ed JSON line in the recipe's rows file.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..cluster import host_name
from ..constants import FRAMES_PER_SECOND, MAX_NEW_TOKENS
from ..data.references import forced_length
from ..errors import WhisperoptError
from ..files import json_text, read_json, write_failure
from .records import BuildFigures, RunFigures, WorkerResult, failure, write_result
from .results import append_row, read_rows, repair_rows


@dataclass
class WorkerJob:
    """What the runner asks a worker to do (written as JSON next to the worker's command line)."""

    model_dir: str
    synthetic: bool
    dataset: str
    decode: dict
    threads: int
    device: str = "cpu"
    limit: int | None = None
    warmup: int = 1
    fidelity_utterances: int = 0
    reference_path: str | None = None
    recipe: str | None = None
    options: dict = field(default_factory=dict)
    rebuild: bool = False
    verify: bool = False
    artifact_dir: str | None = None
    rows_path: str | None = None
    slices_path: str | None = None  # where the run's resource slice goes
    result_path: str | None = None
    throughput_batches: list[int] = field(default_factory=list)
    pack_gap: float | None = None  # the packed pass's gap in seconds (None: no packed pass)
    ids: list[str] | None = None  # a shard: only these utterances (None: all of the dataset's, as limited)
    node: str | None = None  # the name rows give their node (None: this host's name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> WorkerJob:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def probes(self) -> dict:
        """Arguments of ``recipes.validation`` probes for this job's fidelity subset."""
        return {"dataset": self.dataset, "utterances": self.fidelity_utterances,
                "language": self.decode.get("language"), "task": self.decode.get("task", "transcribe")}


def _artifact(job: WorkerJob):
    from ..recipes import get_recipe
    from ..recipes.artifacts import MANIFEST
    from ..recipes.base import Artifact

    recipe = get_recipe(job.recipe)
    adir = Path(job.artifact_dir)
    manifest = read_json(adir / MANIFEST, "artifact manifest", "run `whisperopt build --rebuild`")
    return recipe, Artifact(recipe.name, adir, Path(job.model_dir), manifest, job.options)


def do_build(job: WorkerJob) -> BuildFigures:
    from ..models.resolve import exported_recipe
    from ..recipes import get_recipe
    from ..recipes.artifacts import build_artifact
    from ..recipes.exported import exported_artifact

    recipe = get_recipe(job.recipe)
    t0 = time.perf_counter()
    notes: list[str] = []
    if exported_recipe(job.model_dir):  # a `whisperopt export` directory: its artifact as it is, never rebuilt
        recipe, artifact = exported_artifact(Path(job.model_dir), recipe, job.options, verify=job.verify)
        hit = True
    else:
        artifact, hit = build_artifact(recipe, Path(job.model_dir), job.options, rebuild=job.rebuild,
                                       verify=job.verify, log=lambda m: (notes.append(m), print(m, file=sys.stderr)))
    return BuildFigures(artifact_dir=str(artifact.dir), cache_hit=hit, build_s=round(time.perf_counter() - t0, 2),
                        size_bytes=recipe.size_bytes(artifact), manifest=artifact.manifest, notes=notes)


def cached_build(job: WorkerJob) -> WorkerResult | None:
    """The build step's result without a worker process where the artifact is in the cache and intact (file sizes;
    digests with ``--verify``) and no rebuild is asked: the same check ``build_artifact`` makes first, which reads the
    manifest and the files and loads no engine (a worker process costs seconds of imports). None: a worker must build,
    rebuild, or open an export."""
    from ..models.resolve import exported_recipe
    from ..recipes import get_recipe
    from ..recipes.artifacts import inspect_artifact

    if job.rebuild or exported_recipe(job.model_dir):
        return None
    t0 = time.perf_counter()
    recipe = get_recipe(job.recipe)
    artifact, _ = inspect_artifact(recipe, Path(job.model_dir), job.options, digests=job.verify)
    if artifact is None:
        return None
    figures = BuildFigures(artifact_dir=str(artifact.dir), cache_hit=True, build_s=round(time.perf_counter() - t0, 2),
                           size_bytes=recipe.size_bytes(artifact), manifest=artifact.manifest, notes=[])
    return json.loads(json_text({"ok": True, **figures}))  # as a worker's result reads back from its file


def do_reference(job: WorkerJob) -> WorkerResult:
    """Encoder outputs and teacher-forced top-1 tokens of the baseline on CPU, the bench's fidelity reference."""
    from ..recipes.validation import baseline_reference

    ref = baseline_reference(Path(job.model_dir), threads=job.threads, **job.probes())
    ref.save(Path(job.reference_path))
    return WorkerResult(reference_ids=list(ref))


def _fidelity(runtime, job: WorkerJob) -> dict:
    from ..recipes.validation import Reference, compare

    if not job.reference_path or not Path(job.reference_path).exists():
        return {"fidelity_note": "no reference"}
    return compare(runtime, Path(job.model_dir), Reference.load(Path(job.reference_path)), **job.probes())


def do_run(job: WorkerJob) -> RunFigures:
    from ..data import load_dataset
    from ..metrics.hardware import cpu_info
    from ..metrics.resources import RssSampler, peak_gpu_mb, peak_rss_mb, reset_peak_gpu
    from ..models.processor import load_tokenizer
    from ..recipes.base import DecodeOptions

    recipe, artifact = _artifact(job)
    decode = DecodeOptions(**job.decode)
    synthetic = job.synthetic
    ds = load_dataset(job.dataset).limit(job.limit)
    rows_path = Path(job.rows_path)
    repair_rows(rows_path)  # a torn last row (killed mid-write) is dropped and measured again
    done = {r["id"] for r in read_rows(rows_path)}
    shard = set(job.ids) if job.ids is not None else None
    todo = [u for u in ds.utterances if u.id not in done and (shard is None or u.id in shard)]
    where = {"node": job.node or host_name(), "cpu_model": cpu_info()["model"]}  # speed-ups compare within one CPU
    tok = load_tokenizer(Path(job.model_dir)) if synthetic else None

    reset_peak_gpu()
    t0 = time.perf_counter()
    runtime = recipe.open(artifact, job.device, job.threads)
    load_s = time.perf_counter() - t0
    load_peak = peak_rss_mb()

    warm = ds.utterances[0].load()
    warm_forced = [forced_length(tok, ds.utterances[0].text)] if synthetic else None
    for _ in range(job.warmup):
        runtime.transcribe([warm], decode, warm_forced)

    sampler = RssSampler()
    sampler.start()
    cpu = _measure(runtime, recipe.name, todo, decode, rows_path, tok, where)
    run_ram = sampler.stop()
    resource_slice = {
        "utterances": len(todo),
        "resumed_from": len(done),
        "load_s": load_s,
        "load_peak_ram_mb": load_peak,
        "peak_ram_mb": peak_rss_mb(),
        "run_ram_mb": run_ram,
        "peak_vram_mb": peak_gpu_mb() if job.device == "cuda" else None,
        "cpu_s": cpu.cpu_s,
        "wall_s": cpu.wall_s,
    }
    if todo:  # resource figures of a process that measured nothing would mislead; keep only real slices
        with open(job.slices_path, "a", encoding="utf-8") as f:
            append_row(f, resource_slice)
    info = RunFigures(**resource_slice)
    info.update(runtime.run_info())  # the settings the engine ran with; why its rows are not comparable, if so
    info["fidelity_method"] = runtime.fidelity_method
    info["window"] = runtime.window
    if job.throughput_batches:
        info["throughput"] = _throughput(runtime, ds.utterances, decode, job.throughput_batches, rows_path, tok)
    if job.pack_gap is not None:
        info["packed"] = _packed(runtime, recipe.name, Path(job.model_dir), ds.utterances, decode, job.pack_gap,
                                 rows_path, synthetic)
    info.update(_fidelity(runtime, job) if job.fidelity_utterances else {})
    runtime.close()
    return info


def _measure(runtime, name: str, todo, decode, rows_path: Path, tok, where: dict):
    """The measured pass: ``todo`` transcribed in batches, one fsync'ed row per utterance (latency, tokens, errors;
    on synthetic weights the forced length instead of errors). Returns the CPU meter of the timed calls."""
    from ..data import SAMPLE_RATE
    from ..data.features import audio_frames
    from ..metrics.resources import CpuMeter
    from ..metrics.wer import utterance_errors

    synthetic = tok is not None
    cpu = CpuMeter()
    with open(rows_path, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), decode.batch_size):
            batch = todo[start:start + decode.batch_size]
            audios = [u.load() for u in batch]  # a decode error names the manifest line
            forced = [forced_length(tok, u.text) for u in batch] if synthetic else None
            cpu.start()
            t = time.perf_counter()
            results = runtime.transcribe(audios, decode, forced)
            latency = time.perf_counter() - t
            cpu.stop()
            if len(results) != len(batch):
                raise WhisperoptError(f"{name} returned {len(results)} results for {len(batch)} inputs")
            window_s = audio_frames(audios, runtime.window) / FRAMES_PER_SECOND  # seconds the encoder was given
            for u, audio, res in zip(batch, audios, results):
                row = {"id": u.id, "duration_s": len(audio) / SAMPLE_RATE, "latency_s": latency,
                       "batch": len(batch), "tokens": len(res.tokens), "hypothesis": res.text, "reference": u.text,
                       "window_s": window_s, **where}
                if synthetic:
                    row["forced_tokens"] = forced[batch.index(u)]
                    row["words"] = row["chars"] = None
                else:
                    words, chars = utterance_errors(u.text, res.text)
                    row["words"], row["chars"] = words.to_dict(), chars.to_dict()
                append_row(f, row)
    return cpu


def _throughput(runtime, utterances, decode, batches: list[int], rows_path: Path, tok) -> list[dict]:
    """Throughput mode: the same utterances decoded again at each batch size (audio loaded beforehand, so only the
    engine is timed); per batch size its wall time, RTFx, peak RSS while it ran, and the share of transcripts identical
    to the measured pass's (a batch that changes results is visible, not hidden)."""
    from dataclasses import replace

    from ..data import SAMPLE_RATE
    from ..metrics.resources import RssSampler

    audios = [u.load() for u in utterances]
    forced = [forced_length(tok, u.text) for u in utterances] if tok is not None else None
    measured = {r["id"]: r["hypothesis"] for r in read_rows(rows_path)}
    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
    out = []
    for b in batches:
        opts = replace(decode, batch_size=b)
        runtime.transcribe(audios[:b], opts, forced[:b] if forced else None)  # warm-up at this shape
        sampler = RssSampler()
        sampler.start()
        texts: list[str] = []
        t = time.perf_counter()
        for start in range(0, len(audios), b):
            chunk = runtime.transcribe(audios[start:start + b], opts, forced[start:start + b] if forced else None)
            texts.extend(r.text for r in chunk)
        wall = time.perf_counter() - t
        ram = sampler.stop()
        same = sum(measured.get(u.id) == text for u, text in zip(utterances, texts))
        out.append({"batch": b, "utterances": len(audios), "wall_s": wall, "audio_s": audio_s,
                    "rtfx": audio_s / wall if wall > 0 else None, "run_ram_mb": ram,
                    "same_text": same / len(audios)})
    return out


def packed_options(decode, gap: float | None):
    """``Transcriber.transcribe_clips`` options that decode like the measured pass (greedy or the same beams, one
    temperature, no thresholds, no silence skipping, at most the same new tokens), with timestamps, packed with
    ``gap`` s of silence (None: not packed)."""
    from ..transcribe import TranscribeOptions

    return TranscribeOptions(language=decode.language, task=decode.task, mode="batched", beam_size=decode.beam_size,
                             temperature=(0.0,), compression_ratio_threshold=None, logprob_threshold=None,
                             no_speech_threshold=None, condition_on_previous_text=False,
                             max_new_tokens=decode.max_new_tokens or MAX_NEW_TOKENS, batch_size=decode.batch_size,
                             silence_threshold=0.0, pack=gap is not None, **({"pack_gap": gap} if gap else {}))


def _packed(runtime, name: str, model_dir: Path, utterances, decode, gap: float, rows_path: Path,
            synthetic: bool) -> dict:
    """The packed pass (``--pack``): the same utterances packed several to a 30-s window with ``gap`` s of silence
    after each (``Transcriber.transcribe_clips`` with ``pack``: greedy, one temperature, no silence skipping, the
    measured pass's batch size counted in windows), decoded with timestamps and split back by timestamp. Its wall
    time and RTFx, the windows it took, and on trained weights its WER with the paired ΔWER against the measured
    (unpacked) pass on the same utterances; an engine without timestamp tokens is skipped, saying why."""
    from ..data import SAMPLE_RATE
    from ..metrics.bootstrap import paired_delta_ci
    from ..metrics.resources import RssSampler
    from ..metrics.wer import ErrorCounts, corpus_rate, normalise, utterance_errors
    from ..transcribe import Transcriber

    if runtime.long_form_unsupported:
        return {"gap_s": gap, "skipped": f"no packed pass: {runtime.long_form_unsupported}"}
    transcriber = Transcriber(runtime, model_dir, name)
    opts = packed_options(decode, gap)
    transcriber.check(opts)
    audios = [u.load() for u in utterances]
    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
    transcriber.transcribe_clips(audios[:3], opts)  # warm-up: one packed window
    transcriber.packing.clear()
    sampler = RssSampler()
    sampler.start()
    t = time.perf_counter()
    results = transcriber.transcribe_clips(audios, opts)
    wall = time.perf_counter() - t
    ram = sampler.stop()
    texts = [r.text for r in results]
    measured = {r["id"]: r for r in read_rows(rows_path)}
    out = {"gap_s": gap, "batch": decode.batch_size, "utterances": len(audios), "wall_s": wall, "audio_s": audio_s,
           "rtfx": audio_s / wall if wall > 0 else None, "run_ram_mb": ram, **dict(transcriber.packing),
           "same_words": sum(normalise(measured.get(u.id, {}).get("hypothesis") or "") == normalise(text)
                             for u, text in zip(utterances, texts)) / len(audios)}
    if synthetic:  # random weights emit random timestamps and no end-of-text: nothing like a real run's work
        out["note"] = ("synthetic weights: the windows decode random tokens up to the token limit, so the packed "
                       "pass's time is not comparable with the forced-length passes")
    paired = [(ErrorCounts(**measured[u.id]["words"]), utterance_errors(u.text, text)[0])
              for u, text in zip(utterances, texts) if (measured.get(u.id) or {}).get("words")]
    if synthetic or not paired or sum(b.reference_length for b, _ in paired) == 0:
        return out  # synthetic weights decode noise: no WER, as everywhere
    unpacked, packed = [b for b, _ in paired], [p for _, p in paired]
    d = paired_delta_ci(unpacked, packed)
    out.update(wer=100 * corpus_rate(packed), wer_unpacked=100 * corpus_rate(unpacked), wer_delta=100 * d["delta"],
               wer_delta_ci=[100 * d["lo"], 100 * d["hi"]], wer_delta_significant=d["significant"],
               paired_utterances=len(paired))
    return out


def _die_with_parent() -> None:
    """Exit when the runner that started this worker dies (Linux: PR_SET_PDEATHSIG; elsewhere a watcher thread)."""
    import signal
    import threading

    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) == 0 and os.getppid() == parent:  # 1 = PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        pass

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(143)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    mode, job_path = argv[0], Path(argv[1])
    job = WorkerJob.from_dict(json.loads(job_path.read_text()))
    result_path = Path(job.result_path)
    try:
        fn = {"build": do_build, "reference": do_reference, "run": do_run}[mode]
        result: WorkerResult = {"ok": True, **fn(job)}
        code = 0
    except WhisperoptError as exc:
        result, code = failure(str(exc)), 2
    except MemoryError:
        result, code = failure("out of memory"), 3
    except Exception as exc:  # any engine failure is recorded, the other recipes still run
        tb = traceback.format_exc()
        disk = write_failure(exc, Path(job.rows_path).parent if job.rows_path else Path(job.model_dir))
        result, code = failure(str(disk) if disk else f"{type(exc).__name__}: {exc}", traceback=tb), 1
    write_result(result_path, result)
    return code


if __name__ == "__main__":
    sys.exit(main())
