"""summary.html's long-form part (``report.longform``'s cells and headings as HTML; its recommendation box is
``html_recommendation``'s): per long-form dataset a heading, a table of every recipe and mode (the recommended one
starred) and how it was measured. Reads data only; every text from the results file is escaped."""

from __future__ import annotations

from html import escape

from . import longform
from .html_recommendation import long_recommendation
from .records import LongSummary


def _table(long: LongSummary, name: str, block: dict, i: int) -> str:
    head = "".join(f"<th scope=\"col\">{escape(h)}</th>" for h in ("recipe", "mode", *longform.HEADERS))
    body = []
    for r in block["rows"]:
        mine = longform.recommended_row(long, name, r)
        classes = ["status-" + ("ok" if r["status"] == "ok" else "skipped")]
        classes += ["recommended"] if mine else []
        classes += ["own-settings"] if r.get("own_settings") else []
        star = '<span class="star" title="recommended">★</span> ' if mine else ""
        title = f' title="{escape(str(r["own_settings"]))}"' if r.get("own_settings") else ""
        cells = "".join(f"<td>{escape(c)}</td>" for c in longform.row_cells(r))
        body.append(f'<tr class="{" ".join(classes)}"><th scope="row">{star}{escape(r["recipe"])}</th>'
                    f"<td{title}>{escape(longform.row_name(r))}</td>{cells}</tr>")
    return (f'<div class="scroll"><table id="long-{i}" class="long"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def about(long: LongSummary) -> str:
    boot = long.get("bootstrap") or {}
    items = [f"model: {long.get('model')}; device: {long.get('device')}; threads: {long.get('threads')}; CPU: "
             f"{long.get('cpu')}; batched modes: {long.get('batch_size')} windows per call",
             f"WER in percent; ΔWER in percentage points against {long.get('baseline') or 'the baseline'} in mode "
             f"sequential on the same files; 95 % CIs: percentile bootstrap over files ({boot.get('resamples', '?')} "
             "resamples, paired for deltas)", longform.NOTE]
    if long.get("synthetic"):
        items.insert(0, "synthetic weights: WER/CER n/a (speed and memory only), so no recommendation")
    return "<ul>" + "".join(f"<li>{escape(str(t))}</li>" for t in items) + "</ul>"


def section(long: LongSummary, with_recommendation: bool) -> str:
    """The long-form workload: its recommendation (unless it is the page's headline, shown at the top), a table per
    dataset, and how it was measured."""
    parts = [long_recommendation(long, "recommendation-long")] if with_recommendation else []
    for i, (name, block) in enumerate(long["datasets"].items()):
        parts.append(f"<h3>{escape(longform.block_heading(name, block))}</h3>")
        parts.append(_table(long, name, block, i))
    parts.append(f'<h3>How it was measured</h3><section class="about">{about(long)}</section>')
    return '<section id="long-form">' + "".join(parts) + "</section>"
