"""Recommend the best recipe (fastest by default) whose accuracy stays within a budget of the baseline recipe.

Real weights: a recipe qualifies when the UPPER bound of the bootstrap interval of its paired WER delta against
the baseline (``recipes.baseline_recipe``) is within the budget (percentage points), so a recipe whose point estimate
merely looks fine on a small test set is not recommended. Synthetic weights decode noise, so there the criterion is
the teacher-forced top-1 agreement with fp32, and the answer says WER is n/a.
"""

from __future__ import annotations

from ..errors import WhisperoptError
from ..recipes import baseline_recipe
from .records import LongRecommendation, LongSummary, Recommendation, Summary, SummaryRow

# --rank-by value -> (summary key minimised, what the ranking means)
RANK_BY = {
    "eval_s": ("eval_s", "fastest (lowest eval time)"),
    "peak_ram": ("peak_ram_mb", "lowest peak RAM"),
    "size": ("size_mb", "smallest weights on disk"),
}
FIGURES = ("eval_s", "speedup", "wer", "wer_delta", "wer_delta_ci", "size_mb", "peak_ram_mb",
           "teacher_forced_agreement")


def baseline_name(summary: Summary | LongSummary | None = None) -> str:
    """The recipe every speed-up and delta of ``summary`` is against: the one it names, else the registry's."""
    return (summary or {}).get("baseline") or baseline_recipe().name


def check_criteria(wer_budget: float, min_agreement: float, rank_by: str) -> None:
    """One-line errors for values that cannot mean what the user wants (e.g. 95 given for 0.95)."""
    if rank_by not in RANK_BY:
        raise WhisperoptError(f"unknown --rank-by {rank_by!r}; choose one of {', '.join(RANK_BY)}")
    if wer_budget < 0:
        raise WhisperoptError(f"--wer-budget is in WER percentage points and must be >= 0, got {wer_budget}")
    if not 0 <= min_agreement <= 1:
        raise WhisperoptError(f"--min-agreement is a fraction between 0 and 1, got {min_agreement}")


def _points(value: float) -> str:
    return f"{value:g} percentage point" + ("" if value == 1 else "s")


def _level(summary: Summary | LongSummary) -> str:
    return f"{100 * (summary.get('bootstrap') or {}).get('level', 0.95):g} %"


def _wer_exclusion(r: SummaryRow | dict, wer_budget: float, level: str, baseline: str) -> str | None:
    ci = r.get("wer_delta_ci")
    if r.get("wer_delta") is None or not ci:
        return f"no WER paired with {baseline}"
    if ci[1] <= wer_budget:
        return None
    if r["wer_delta"] <= wer_budget:
        return (f"ΔWER {r['wer_delta']:+.2f} points is within the {wer_budget:g}-point budget, but the upper bound of "
                f"its {level} CI ({ci[1]:+.2f}) is not")
    return f"ΔWER {r['wer_delta']:+.2f} points ({level} CI up to {ci[1]:+.2f}) exceeds the {wer_budget:g}-point budget"


def _agreement_exclusion(r: SummaryRow, min_agreement: float) -> str | None:
    agreement = r.get("teacher_forced_agreement")
    if agreement is None:
        return "no teacher-forced agreement measured"
    if agreement < min_agreement:
        return f"teacher-forced agreement {100 * agreement:.2f} % < {100 * min_agreement:g} %"
    return None


def exclusion(r: SummaryRow, by_wer: bool, wer_budget: float, min_agreement: float, key: str, level: str,
              baseline: str) -> str | None:
    """Why ``r`` cannot be recommended, or None."""
    if r["status"] != "ok":
        reason = r.get("reason")
        return f"{r['status']}: {reason}" if reason else r["status"]
    if not r.get("complete"):
        return f"incomplete: {r.get('utterances', '?')} of {r.get('expected_utterances', '?')} utterances measured"
    if r.get("not_comparable"):
        return f"not comparable: {r['not_comparable']}"
    if r.get("own_settings"):
        return "decoded with its own settings, not the bench's (shown for reference)"
    why = _wer_exclusion(r, wer_budget, level, baseline) if by_wer else _agreement_exclusion(r, min_agreement)
    if why:
        return why
    if r.get(key) is None:
        return f"no {key} figure to rank by"
    return None


def _criterion(summary: Summary, base: SummaryRow | None, by_wer: bool, wer_budget: float, min_agreement: float,
               rank_by: str) -> str:
    ranking, baseline = RANK_BY[rank_by][1], baseline_name(summary)
    if by_wer:
        return (f"{ranking} recipe whose ΔWER vs {baseline} ({base['wer']:.2f} %) has a {_level(summary)} CI upper "
                f"bound <= {_points(wer_budget)}")
    why = "synthetic weights" if summary.get("synthetic") else f"{baseline} has no WER"
    return (f"{ranking} recipe with teacher-forced top-1 agreement with fp32 >= {100 * min_agreement:g} % "
            f"(WER is n/a: {why})")


def recommend(summary: Summary, wer_budget: float = 1.0, min_agreement: float = 0.95,
              rank_by: str = "eval_s") -> Recommendation:
    """The best eligible recipe under ``rank_by`` (eval_s, peak_ram or size: lowest wins).

    Eligible: status ok, complete, comparable, and (real weights) the upper bound of the paired ΔWER interval
    <= ``wer_budget`` percentage points (the baseline itself, delta 0, qualifies); without a WER, teacher-forced
    agreement >= ``min_agreement`` (a fraction). ``ranking`` lists every eligible recipe, best first;
    ``excluded`` says why each other recipe is not.
    """
    check_criteria(wer_budget, min_agreement, rank_by)
    key = RANK_BY[rank_by][0]
    rows, baseline = summary["recipes"], baseline_name(summary)
    base = next((r for r in rows if r["recipe"] == baseline and r["status"] == "ok"), None)
    by_wer = not summary.get("synthetic") and base is not None and base.get("wer") is not None
    level = _level(summary)
    excluded, eligible = {}, []
    for r in rows:
        why = exclusion(r, by_wer, wer_budget, min_agreement, key, level, baseline)
        if why:
            excluded[r["recipe"]] = why
        else:
            eligible.append(r)
    eligible.sort(key=lambda r: (r[key], r["recipe"]))
    best = eligible[0] if eligible else None
    reason = None
    if best is None:
        ok = any(r["status"] == "ok" for r in rows)
        reason = "no recipe meets the criterion" if ok else "no recipe finished successfully"
    return Recommendation({
        "recipe": best["recipe"] if best else None,
        "reason": reason,
        "criterion": _criterion(summary, base, by_wer, wer_budget, min_agreement, rank_by),
        "basis": "wer" if by_wer else "teacher_forced_agreement",
        "rank_by": rank_by,
        "wer_budget": wer_budget,
        "min_agreement": min_agreement,
        **{k: (best.get(k) if best else None) for k in FIGURES},
        "ranking": [r["recipe"] for r in eligible],
        "excluded": excluded,
    })


# the long-form workload (bench/longform_runner.py's rows, one table per dataset): --rank-by value -> (row key, the
# best is its highest, what the ranking means); size is no long-form figure, so it ranks by speed there too
LONG_RANK_BY = {
    "eval_s": ("rtfx", True, "fastest (highest RTFx)"),
    "peak_ram": ("peak_ram_mb", False, "lowest peak RAM"),
    "size": ("rtfx", True, "fastest (highest RTFx; weights on disk are not a long-form figure)"),
}
LONG_FIGURES = ("rtfx", "speedup", "wer", "wer_delta", "wer_delta_ci", "peak_ram_mb", "run_ram_mb",
                "stretch_words", "loops", "start_error_median_s")


def long_label(row: dict) -> str:
    """A long-form row's name: its recipe and mode (``<recipe> <mode>``)."""
    return f"{row.get('recipe')} {row.get('mode')}"


def _long_exclusion(r: dict, reference: str | None, wer_budget: float, level: str, key: str) -> str | None:
    if r.get("status") != "ok":
        return f"{r.get('status')}: {r['reason']}" if r.get("reason") else str(r.get("status"))
    if r.get("own_settings"):
        return "decoded with its own settings, not the bench's (shown for reference)"
    if reference is None:
        return "no reference run (the baseline in mode sequential): no paired ΔWER to judge it by"
    if long_label(r) != reference:  # the reference itself qualifies (ΔWER 0)
        why = _wer_exclusion(r, wer_budget, level, reference)
        if why:
            return why
    if r.get(key) is None:
        return f"no {key} figure to rank by"
    return None


def recommend_long(summary: LongSummary, wer_budget: float = 1.0,
                   rank_by: str = "eval_s") -> dict[str, LongRecommendation]:
    """Per long-form dataset: the best recipe and mode under ``rank_by`` (eval_s: highest RTFx; peak_ram: lowest
    peak RAM) among those whose paired ΔWER against the baseline in mode sequential (same files, bootstrap over
    files) has its CI upper bound <= ``wer_budget`` points, the reference row itself included. A peer row decoded
    with its own settings is shown, never recommended; synthetic weights (WER n/a) and a dataset the reference did
    not run get no recommendation. Each answer has ``recipe``/``mode`` (None: ``reason`` says why), ``criterion``,
    the winner's figures, ``ranking`` and ``excluded`` (by ``long_label``)."""
    check_criteria(wer_budget, 0.95, rank_by)
    key, highest, ranking = LONG_RANK_BY[rank_by]
    level = _level(summary)
    synthetic = bool(summary.get("synthetic") or summary.get("wer_note"))
    out = {}
    for name, block in summary["datasets"].items():
        rows, reference = block["rows"], block.get("reference")
        ref_row = next((r for r in rows if long_label(r) == reference and r.get("status") == "ok"), None)
        criterion = (f"{ranking} recipe and mode whose ΔWER vs {reference or 'the baseline in mode sequential'}"
                     + (f" ({ref_row['wer']:.2f} %)" if ref_row and ref_row.get("wer") is not None else "")
                     + f" has a {level} CI upper bound <= {_points(wer_budget)} (paired over files)")
        excluded, eligible = {}, []
        for r in rows:
            why = "synthetic weights: WER n/a" if synthetic and r.get("status") == "ok" else \
                _long_exclusion(r, reference, wer_budget, level, key)
            if why:
                excluded[long_label(r)] = why
            else:
                eligible.append(r)
        eligible.sort(key=lambda r: (-r[key] if highest else r[key], long_label(r)))
        best = eligible[0] if eligible else None
        reason = None
        if synthetic:
            reason = "synthetic weights: WER n/a, no accuracy to rank by (speed and memory only)"
        elif best is None:
            reason = ("no reference run (the baseline in mode sequential)" if reference is None else
                      "no recipe and mode meets the criterion")
        out[name] = LongRecommendation({
            "recipe": best["recipe"] if best else None, "mode": best["mode"] if best else None, "reason": reason,
            "criterion": criterion, "basis": "wer", "rank_by": rank_by, "wer_budget": wer_budget,
            "reference": reference, **{k: (best.get(k) if best else None) for k in LONG_FIGURES},
            "ranking": [long_label(r) for r in eligible], "excluded": excluded})
    return out
