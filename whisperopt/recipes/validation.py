"""Build-time fidelity check shared by the engines: a freshly built artifact is compared with torch-fp32 on a few
dev-clean utterances (encoder relative error, teacher-forced top-1 agreement) and a build under the recipe's floor
fails, so a broken export never runs. The bench's fidelity columns use the same probes and metrics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import WhisperoptError

VALIDATION_DATASET = "librispeech:dev-clean"  # never test data
VALIDATION_UTTERANCES = 2


def probe_job(model_dir: Path, dataset: str, utterances: int) -> dict:
    return {"model_dir": str(model_dir), "dataset": dataset, "fidelity_utterances": utterances,
            "decode": {"language": "en", "task": "transcribe"}}


def fidelity_check(runtime, model_dir: Path, floor: float, *, dataset: str = VALIDATION_DATASET,
                   utterances: int = VALIDATION_UTTERANCES, threads: int | None = None,
                   reference: dict | None = None) -> dict:
    """Compare ``runtime`` with torch-fp32 on ``utterances`` of ``dataset`` (the bench's probes and metrics).

    Returns the figures with ``passed`` (teacher-forced agreement >= ``floor`` and a finite encoder error).
    ``reference``: precomputed torch outputs ({uid: (enc, top1)}) to skip loading torch again.
    """
    from ..bench.worker import _probe_inputs
    from ..metrics.fidelity import relative_l2, summarise, top1_agreement

    job = probe_job(model_dir, dataset, utterances)
    if reference is None:
        reference = torch_reference(model_dir, dataset, utterances, threads)
    errors, matches, positions = [], 0, 0
    for uid, feats, tokens, prompt_len in _probe_inputs(job):
        ref_enc, ref_top1 = reference[uid]
        errors.append(relative_l2(ref_enc, runtime.encoder_output(feats)))
        m, n = top1_agreement(ref_top1, np.asarray(runtime.teacher_forced_top1(feats, tokens))[prompt_len - 1:])
        matches += m
        positions += n
    out = summarise(errors, matches, positions)
    out.update(dataset=dataset, utterances=utterances, floor=floor)
    enc_ok = out["encoder_rel_error"] is not None and np.isfinite(out["encoder_rel_error"])
    out["passed"] = bool(enc_ok and out["teacher_forced_agreement"] is not None
                         and out["teacher_forced_agreement"] >= floor)
    return out


def torch_reference(model_dir: Path, dataset: str = VALIDATION_DATASET, utterances: int = VALIDATION_UTTERANCES,
                    threads: int | None = None) -> dict:
    from ..bench.worker import _probe_inputs
    from .base import Artifact as _Artifact
    from .pytorch import TorchFp32

    recipe = TorchFp32()
    art = _Artifact(recipe.name, Path(model_dir), Path(model_dir), {"weights_dir": str(model_dir)}, {})
    rt = recipe.load(art, "cpu", threads or os.cpu_count() or 1)
    ref = {}
    for uid, feats, tokens, prompt_len in _probe_inputs(probe_job(model_dir, dataset, utterances)):
        ref[uid] = (rt.encoder_output(feats), np.asarray(rt.teacher_forced_top1(feats, tokens))[prompt_len - 1:])
    rt.close()
    return ref


def fidelity_failure(name: str, result: dict) -> str:
    enc = result.get("encoder_rel_error")
    return (f"{name}: fidelity check failed on {result['utterances']} dev-clean utterances: teacher-forced agreement "
            f"{100 * (result['teacher_forced_agreement'] or 0):.1f} % < floor {100 * result['floor']:.1f} %"
            + (f" (encoder rel. error {enc:.2e})" if enc is not None else ""))


def require_fidelity(name: str, runtime, model_dir: Path, floor: float, **kwargs) -> dict:
    """``fidelity_check`` that raises the one-line build error below the floor; closes ``runtime``."""
    try:
        result = fidelity_check(runtime, model_dir, floor, **kwargs)
    finally:
        runtime.close()
    if not result["passed"]:
        raise WhisperoptError(fidelity_failure(name, result))
    return result
