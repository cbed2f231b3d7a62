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
from pathlib import Path

import numpy as np

from ..data.references import forced_length, reference_tokens
from ..errors import WhisperoptError
from ..files import atomic_write_json
from .results import append_row, read_rows


def _artifact(job: dict):
    from ..recipes import get_recipe
    from ..recipes.artifacts import MANIFEST
    from ..recipes.base import Artifact

    recipe = get_recipe(job["recipe"])
    adir = Path(job["artifact_dir"])
    manifest = json.loads((adir / MANIFEST).read_text())
    return recipe, Artifact(recipe.name, adir, Path(job["model_dir"]), manifest, job["options"])


def do_build(job: dict) -> dict:
    from ..recipes import get_recipe
    from ..recipes.artifacts import build_artifact

    recipe = get_recipe(job["recipe"])
    t0 = time.perf_counter()
    artifact, hit = build_artifact(recipe, Path(job["model_dir"]), job["options"], rebuild=job.get("rebuild", False))
    return {"artifact_dir": str(artifact.dir), "cache_hit": hit, "build_s": round(time.perf_counter() - t0, 2),
            "size_bytes": recipe.size_bytes(artifact), "manifest": artifact.manifest}


def _probe_inputs(job: dict):
    """(utterance ids, log-mel features, teacher-forcing token sequences) for the fidelity subset."""
    from ..data import load_audio, load_dataset
    from ..recipes.transformers_runtime import decoder_prompt, load_processor

    processor = load_processor(Path(job["model_dir"]))
    tok = processor.tokenizer
    gen = json.loads((Path(job["model_dir"]) / "generation_config.json").read_text())
    prompt = decoder_prompt(tok, job["decode"]["language"], job["decode"]["task"], gen.get("is_multilingual", True))
    ds = load_dataset(job["dataset"]).limit(job["fidelity_utterances"])
    for u in ds.utterances:
        feats = processor.feature_extractor(load_audio(u.audio), sampling_rate=16000, return_tensors="np").input_features
        tokens = prompt + reference_tokens(tok, u.text)[:440] + [tok.eos_token_id]
        yield u.id, feats.astype(np.float32), tokens, len(prompt)


def do_reference(job: dict) -> dict:
    """Encoder outputs and teacher-forced top-1 tokens of torch-fp32 on CPU, the fidelity reference."""
    from ..recipes import get_recipe
    from ..recipes.base import Artifact

    recipe = get_recipe("torch-fp32")
    artifact = Artifact(recipe.name, Path(job["model_dir"]), Path(job["model_dir"]),
                        {"weights_dir": job["model_dir"]}, {})
    runtime = recipe.load(artifact, "cpu", job["threads"])
    arrays, ids = {}, []
    for uid, feats, tokens, prompt_len in _probe_inputs(job):
        arrays[f"enc/{uid}"] = runtime.encoder_output(feats)
        arrays[f"top1/{uid}"] = runtime.teacher_forced_top1(feats, tokens)[prompt_len - 1:]
        ids.append(uid)
    tmp = Path(job["reference_path"] + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, job["reference_path"])
    return {"utterances": ids}


def _fidelity(runtime, job: dict) -> dict:
    from ..metrics.fidelity import relative_l2, summarise, top1_agreement

    ref_path = job.get("reference_path")
    if not ref_path or not Path(ref_path).exists():
        return {"fidelity_note": "no reference"}
    ref = np.load(ref_path)
    errors, matches, positions, note = [], 0, 0, None
    for uid, feats, tokens, prompt_len in _probe_inputs(job):
        enc = runtime.encoder_output(feats)
        if enc is not None and f"enc/{uid}" in ref:
            errors.append(relative_l2(ref[f"enc/{uid}"], enc))
        top1 = runtime.teacher_forced_top1(feats, tokens)
        if top1 is not None and f"top1/{uid}" in ref:
            m, n = top1_agreement(ref[f"top1/{uid}"], np.asarray(top1)[prompt_len - 1:])
            matches += m
            positions += n
        if enc is None and top1 is None:
            note = "engine exposes neither encoder output nor decoder scores"
            break
    out = summarise(errors, matches, positions)
    if note:
        out["fidelity_note"] = note
    return out


def do_run(job: dict) -> dict:
    from ..data import SAMPLE_RATE, load_audio, load_dataset
    from ..metrics.resources import CpuMeter, RssSampler, peak_gpu_mb, peak_rss_mb, reset_peak_gpu
    from ..metrics.wer import utterance_errors
    from ..recipes.base import DecodeOptions
    from ..recipes.transformers_runtime import load_processor

    recipe, artifact = _artifact(job)
    decode = DecodeOptions(**job["decode"])
    synthetic = job["synthetic"]
    ds = load_dataset(job["dataset"]).limit(job.get("limit"))
    rows_path = Path(job["rows_path"])
    done = {r["id"] for r in read_rows(rows_path)}
    todo = [u for u in ds.utterances if u.id not in done]
    tok = load_processor(Path(job["model_dir"])).tokenizer if synthetic else None

    reset_peak_gpu()
    t0 = time.perf_counter()
    runtime = recipe.load(artifact, job["device"], job["threads"])
    load_s = time.perf_counter() - t0
    load_peak = peak_rss_mb()

    warm = load_audio(ds.utterances[0].audio)
    warm_forced = [forced_length(tok, ds.utterances[0].text)] if synthetic else None
    for _ in range(job.get("warmup", 1)):
        runtime.transcribe([warm], decode, warm_forced)

    sampler = RssSampler()
    sampler.start()
    cpu = CpuMeter()
    with open(rows_path, "a", encoding="utf-8") as f:
        for start in range(0, len(todo), decode.batch_size):
            batch = todo[start:start + decode.batch_size]
            audios = [load_audio(u.audio) for u in batch]
            forced = [forced_length(tok, u.text) for u in batch] if synthetic else None
            cpu.start()
            t = time.perf_counter()
            results = runtime.transcribe(audios, decode, forced)
            latency = time.perf_counter() - t
            cpu.stop()
            if len(results) != len(batch):
                raise WhisperoptError(f"{recipe.name} returned {len(results)} results for {len(batch)} inputs")
            for u, audio, res in zip(batch, audios, results):
                row = {"id": u.id, "duration_s": len(audio) / SAMPLE_RATE, "latency_s": latency,
                       "batch": len(batch), "tokens": len(res.tokens), "hypothesis": res.text, "reference": u.text}
                if synthetic:
                    row["forced_tokens"] = forced[batch.index(u)]
                    row["words"] = row["chars"] = None
                else:
                    words, chars = utterance_errors(u.text, res.text)
                    row["words"], row["chars"] = words.to_dict(), chars.to_dict()
                append_row(f, row)
    run_ram = sampler.stop()
    segment = {
        "utterances": len(todo),
        "resumed_from": len(done),
        "load_s": load_s,
        "load_peak_ram_mb": load_peak,
        "peak_ram_mb": peak_rss_mb(),
        "run_ram_mb": run_ram,
        "peak_vram_mb": peak_gpu_mb() if job["device"] == "cuda" else None,
        "cpu_s": cpu.cpu_s,
        "wall_s": cpu.wall_s,
    }
    if todo:  # resource figures of a process that measured nothing would mislead; keep only real segments
        with open(job["segments_path"], "a", encoding="utf-8") as f:
            append_row(f, segment)
    info = dict(segment)
    # optional: the settings the engine actually ran with, and why its rows are not comparable (if they are not)
    info.update(runtime.run_info() if callable(getattr(runtime, "run_info", None)) else {})
    info.update(_fidelity(runtime, job) if job.get("fidelity_utterances") else {})
    runtime.close()
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    mode, job_path = argv[0], Path(argv[1])
    job = json.loads(job_path.read_text())
    result_path = Path(job["result_path"])
    try:
        fn = {"build": do_build, "reference": do_reference, "run": do_run}[mode]
        result = {"ok": True, **fn(job)}
        code = 0
    except WhisperoptError as exc:
        result, code = {"ok": False, "error": str(exc)}, 2
    except MemoryError:
        result, code = {"ok": False, "error": "out of memory"}, 3
    except Exception as exc:  # any engine failure is recorded, the other recipes still run
        tb = traceback.format_exc()
        result, code = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": tb}, 1
    atomic_write_json(result_path, result)
    return code


if __name__ == "__main__":
    sys.exit(main())
