"""Plots of a benchmark summary (matplotlib, headless): speed-up vs size, latency per recipe, and the
accuracy / speed Pareto front with the recommended recipe."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .columns import flags
from .recommend import baseline_name, recommend
from .records import LongSummary, Recommendation, Summary, SummaryRow


def _save(fig, path: Path, **kwargs) -> None:
    """Save a figure under a temporary name and rename it into place: a full disk leaves no half-written PNG."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=120, **kwargs)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

def _title(summary: Summary) -> str:
    return f"{summary['config']['model']} — {summary['config']['dataset']}"


def _speedup_vs_size(plt, summary: Summary, rows: list[SummaryRow]):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r.get("size_mb") and r.get("speedup"):
            ax.scatter(r["size_mb"], r["speedup"], s=40)
            ax.annotate(r["recipe"], (r["size_mb"], r["speedup"]), fontsize=8, xytext=(4, 3),
                        textcoords="offset points")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("weights on disk (MB)")
    ax.set_ylabel(f"speed-up vs {baseline_name(summary)} (×)")
    ax.set_title(_title(summary), fontsize=10)
    fig.tight_layout()
    return fig


def _latency(plt, summary: Summary, rows: list[SummaryRow]):
    fig, ax = plt.subplots(figsize=(7, 1.6 + 0.4 * len(rows)))
    names = [r["recipe"] for r in rows]
    p50 = [1000 * (r.get("latency_p50_s") or 0) for r in rows]
    p90 = [1000 * (r.get("latency_p90_s") or 0) for r in rows]
    ax.barh(names, p90, color="#c6dbef", label="p90")
    ax.barh(names, p50, color="#3182bd", label="p50")
    ax.invert_yaxis()
    ax.set_xlabel("latency per utterance (ms)")
    ax.set_title(_title(summary), fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def accuracy_axis(summary: Summary) -> tuple[str, bool]:
    """(the row key on the y axis, whether lower is better): WER % for real weights; teacher-forced agreement for
    synthetic weights (and whenever no recipe has a WER), whose WER is noise."""
    has_wer = any(r.get("wer") is not None for r in summary["recipes"] if r["status"] == "ok")
    if summary.get("synthetic") or not has_wer:
        return "teacher_forced_agreement", False
    return "wer", True


def pareto_front(points: list[tuple[float, float, str]], lower_is_better: bool) -> list[tuple[float, float, str]]:
    """The non-dominated (speed-up, accuracy, name) points: no other point is at least as fast and at least as
    accurate while strictly better in one. Returned by increasing speed-up."""
    front = []
    best = None
    # fastest first: a point is on the front when it is more accurate than every faster one
    for x, y, name in sorted(points, key=lambda p: (-p[0], p[1] if lower_is_better else -p[1])):
        better = best is None or (y < best if lower_is_better else y > best)
        if better:
            front.append((x, y, name))
            best = y
    return sorted(front)


def _pareto_points(rows: list[SummaryRow], key: str, scale: float) -> list[tuple[float, float, str]]:
    return [(r["speedup"], scale * r[key], r["recipe"]) for r in rows
            if r.get("speedup") is not None and r.get(key) is not None]


def _comparable(r: SummaryRow) -> bool:
    return bool(r.get("complete", True)) and not r.get("not_comparable") and not r.get("own_settings")


def _pareto(plt, summary: Summary, rows: list[SummaryRow], recommendation: Recommendation | None):
    key, lower = accuracy_axis(summary)
    scale = 1.0 if key == "wer" else 100.0  # agreement is a fraction in the summary; plotted in percent
    fig, ax = plt.subplots(figsize=(8, 5.5))
    placed = sorted((r for r in rows if r.get("speedup") is not None and r.get(key) is not None),
                    key=lambda r: r["speedup"])
    for i, r in enumerate(placed):
        x, y = r["speedup"], scale * r[key]
        # incomplete / not comparable rows are shown hollow and never on the front
        style = {"color": "#3182bd"} if _comparable(r) else {"facecolor": "none", "edgecolor": "grey"}
        ci = r.get("wer_ci") if key == "wer" else None
        if ci and ci[0] is not None:
            ax.errorbar(x, y, yerr=[[max(0.0, y - ci[0])], [max(0.0, ci[1] - y)]], fmt="none", ecolor="#9ecae1",
                        capsize=3, lw=1)
        ax.scatter(x, y, s=36, zorder=3, **style)
        label = r["recipe"] + "".join(f" ({f})" for f in flags(r))
        # neighbours along x alternate above / below their point, so close recipes' labels do not overprint
        ax.annotate(label, (x, y), fontsize=7, xytext=(5, 6 if i % 2 == 0 else -11), textcoords="offset points")
    front = pareto_front(_pareto_points([r for r in rows if _comparable(r)], key, scale), lower)
    if front:
        # the front is a staircase: between two front points, the next (faster) one's accuracy is attainable
        ax.step([p[0] for p in front], [p[1] for p in front], where="pre", color="#e6550d", lw=1.2,
                label="Pareto front")
    _mark_recommended(ax, rows, recommendation, key, scale)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"speed-up vs {baseline_name(summary)} (×)")
    ax.set_ylabel("WER % (95 % CI, lower is better)" if key == "wer"
                  else "teacher-forced top-1 agreement with fp32 % (WER n/a; higher is better)")
    ax.set_title(_title(summary), fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def _mark_recommended(ax, rows: list[SummaryRow], recommendation: Recommendation | None, key: str, scale: float) -> None:
    name = (recommendation or {}).get("recipe")
    row = next((r for r in rows if r["recipe"] == name), None)
    if row is None or row.get("speedup") is None or row.get(key) is None:
        return
    x, y = row["speedup"], scale * row[key]
    ax.scatter(x, y, marker="*", s=260, color="#fdae6b", edgecolor="#a63603", zorder=4, label=f"recommended: {name}")
    ax.annotate("recommended", (x, y), fontsize=8, fontweight="bold", color="#a63603", xytext=(0, -24),
                textcoords="offset points", ha="center", arrowprops={"arrowstyle": "-", "color": "#a63603", "lw": 0.6})


@contextmanager
def figures(summary: Summary | LongSummary,
            recommendation: Recommendation | None = None) -> Iterator[list[tuple[str, object, dict]]]:
    """Every plot as (file name, matplotlib figure, savefig keywords), closed on exit; none when no recipe
    finished. The recommendation defaults to the summary's own (or one computed with the default criteria)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary.get("recipes", []) if r["status"] == "ok"]  # none: the long-form workload alone
    made: list[tuple[str, object, dict]] = []
    try:
        if rows:
            if recommendation is None:
                recommendation = summary.get("recommendation") or recommend(summary)
            made.append(("speedup_vs_size.png", _speedup_vs_size(plt, summary, rows), {}))
            made.append(("latency.png", _latency(plt, summary, rows), {}))
            # "tight" keeps the labels of the outermost points
            made.append(("pareto.png", _pareto(plt, summary, rows, recommendation), {"bbox_inches": "tight"}))
        yield made
    finally:
        for _, fig, _ in made:
            plt.close(fig)


def write_plots(summary: Summary | LongSummary, out_dir: Path, recommendation: Recommendation | None = None) -> list[Path]:
    """speedup_vs_size.png, latency.png and pareto.png (see ``figures``)."""
    paths = []
    with figures(summary, recommendation) as made:
        for name, fig, kwargs in made:
            _save(fig, Path(out_dir) / name, **kwargs)
            paths.append(Path(out_dir) / name)
    return paths
