"""summary.html's recommendation boxes, both workloads: the winner (or none, and why), the criterion, the runner-ups
and the recipes excluded, with why. Every text from the results file is escaped."""

from __future__ import annotations

from html import escape

from . import longform
from .recommend import baseline_name
from .records import LongSummary, Recommendation, Summary
from .tables import winner_text


def _decision(rec: dict) -> list[str]:
    """The criterion, the runner-ups and the exclusions of one recommendation (either workload's)."""
    parts = [f"<p>criterion: {escape(rec['criterion'])}</p>"]
    if rec.get("ranking", [])[1:]:
        parts.append(f"<p>runner-ups, in order: {escape(', '.join(rec['ranking'][1:]))}</p>")
    if rec.get("excluded"):
        items = "".join(f"<li><strong>{escape(who)}</strong>: {escape(why)}</li>" for who, why in rec["excluded"].items())
        parts.append(f"<details><summary>excluded ({len(rec['excluded'])})</summary><ul>{items}</ul></details>")
    return parts


def _box(ident: str, parts: list[str]) -> str:
    return f'<section id="{ident}" class="recommendation">' + "".join(parts) + "</section>"


def short_recommendation(summary: Summary, rec: Recommendation, ident: str = "recommendation") -> str:
    """The short-form recommendation, one box (``ident``: its id)."""
    if rec["recipe"] is None:
        winner = f'<p class="winner">recommended: none ({escape(str(rec.get("reason")))})</p>'
    else:
        winner = (f'<p class="winner"><span class="star">★</span> recommended: <strong>{escape(rec["recipe"])}'
                  f'</strong>: {escape(winner_text(rec, baseline_name(summary)))}</p>')
    return _box(ident, [winner, *_decision(rec)])


def long_recommendation(long: LongSummary, ident: str) -> str:
    """The long-form recommendation of every dataset, one box (``ident``: its id)."""
    parts = []
    for name, rec in (long.get("recommendation") or {}).items():
        if rec["recipe"] is None:
            parts.append(f'<p class="winner">long-form, {escape(name)}: recommended: none '
                         f"({escape(str(rec.get('reason')))})</p>")
        else:
            parts.append(f'<p class="winner"><span class="star">★</span> long-form, {escape(name)}: recommended: '
                         f"<strong>{escape(rec['recipe'])} {escape(rec['mode'])}</strong>: "
                         f"{escape(longform.winner_text(rec))}</p>")
        parts += _decision(rec)
    return _box(ident, parts or ["<p>long-form: no dataset</p>"])
