"""Recommend the fastest recipe whose accuracy stays within a budget of the torch-fp32 baseline."""

from __future__ import annotations

from ..errors import WhisperoptError


def recommend(summary: dict, wer_budget: float = 1.0, min_agreement: float = 0.95) -> dict:
    """Fastest ok recipe with WER <= baseline WER + ``wer_budget`` (percentage points).

    Synthetic checkpoints have no meaningful WER, so there the criterion is the teacher-forced top-1 agreement
    with fp32 (>= ``min_agreement``), and the answer says so.
    """
    rows = [r for r in summary["recipes"] if r["status"] == "ok" and r.get("eval_s")]
    if not rows:
        raise WhisperoptError("no recipe finished successfully; nothing to recommend")
    base = next((r for r in rows if r["recipe"] == "torch-fp32"), None)
    if not summary.get("synthetic") and base and base.get("wer") is not None:
        limit = base["wer"] + wer_budget / 100
        eligible = [r for r in rows if r.get("wer") is not None and r["wer"] <= limit]
        criterion = f"WER <= {100 * limit:.2f} % (torch-fp32 {100 * base['wer']:.2f} % + {wer_budget} points)"
    else:
        eligible = [r for r in rows if (r.get("teacher_forced_agreement") or 0) >= min_agreement]
        criterion = (f"teacher-forced top-1 agreement with fp32 >= {100 * min_agreement:.1f} % "
                     f"(WER is n/a{' for synthetic weights' if summary.get('synthetic') else ''})")
    if not eligible:
        return {"recipe": None, "criterion": criterion, "reason": "no recipe meets the criterion"}
    best = min(eligible, key=lambda r: r["eval_s"])
    return {"recipe": best["recipe"], "criterion": criterion, "eval_s": best["eval_s"], "speedup": best.get("speedup"),
            "size_mb": best.get("size_mb"), "wer": best.get("wer"),
            "teacher_forced_agreement": best.get("teacher_forced_agreement")}
