"""Plots of a benchmark summary (matplotlib, headless): speed-up vs size, and latency per recipe."""

from __future__ import annotations

from pathlib import Path


def write_plots(summary: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["recipes"] if r["status"] == "ok"]
    if not rows:
        return []
    out_dir = Path(out_dir)
    paths = []
    title = f"{summary['config']['model']} — {summary['config']['dataset']}"

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r.get("size_mb") and r.get("speedup"):
            ax.scatter(r["size_mb"], r["speedup"], s=40)
            ax.annotate(r["recipe"], (r["size_mb"], r["speedup"]), fontsize=8, xytext=(4, 3),
                        textcoords="offset points")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("weights on disk (MB)")
    ax.set_ylabel("speed-up vs torch-fp32 (×)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "speedup_vs_size.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.4 * len(rows)))
    names = [r["recipe"] for r in rows]
    p50 = [1000 * (r.get("latency_p50_s") or 0) for r in rows]
    p90 = [1000 * (r.get("latency_p90_s") or 0) for r in rows]
    ax.barh(names, p90, color="#c6dbef", label="p90")
    ax.barh(names, p50, color="#3182bd", label="p50")
    ax.invert_yaxis()
    ax.set_xlabel("latency per utterance (ms)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    fig.tight_layout()
    paths.append(out_dir / "latency.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
