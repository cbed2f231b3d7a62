"""summary.html: the benchmark summary as one self-contained page — the recommendation, a table sortable by any
column, each recipe's notes, the plots and the run's environment. Nothing is fetched: the style, the script and the
plots (SVG data URIs) are inline, and a Content-Security-Policy forbids any other source, so it opens offline, from
a mail attachment or a CI artifact. Reads data only; the columns, cell texts, notes and header are tables.py's."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from html import escape
from pathlib import Path

from ..files import atomic_write_text
from . import longform, longform_html
from .columns import COLUMNS, NA, cells, flags, marks, select_columns
from .html_recommendation import long_recommendation, short_recommendation
from .plots import figures
from .recommend import recommend
from .records import LongSummary, Recommendation, Summary, SummaryRow
from .tables import md_header, md_notes, throughput_lines
from .workloads import LABELS, headline, order, parts

# the plots, most telling first: file stem -> what it shows (alt text and caption)
PLOTS = {
    "pareto": "Accuracy against speed-up: the Pareto front of the comparable recipes and the recommended one "
              "(hollow: incomplete, not comparable or own settings)",
    "latency": "Latency per utterance of each recipe (p50 and p90)",
    "speedup_vs_size": "Speed-up against the size of the weights on disk",
}
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")

STYLE = """
:root { color-scheme: light; --line: #d0d7de; --muted: #57606a; --rec: #fff1e0; --rec-edge: #e6550d; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto;
  max-width: 1400px; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; } h2 { font-size: 1.15rem; margin: 2rem 0 .6rem; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f6f8fa; padding: 0 .2em; }
.recommendation { background: var(--rec); border-left: 4px solid var(--rec-edge); padding: .6rem 1rem;
  border-radius: 4px; } .recommendation p { margin: .3rem 0; } .winner { font-size: 1.05rem; }
.star { color: var(--rec-edge); }
.scroll { overflow: auto; max-height: 80vh; width: fit-content; max-width: 100%; border: 1px solid var(--line); border-radius: 4px; }
table { border-collapse: separate; border-spacing: 0; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .55rem; border-bottom: 1px solid var(--line); white-space: nowrap; text-align: right;
  background: #fff; }
thead th { position: sticky; top: 0; z-index: 2; background: #f6f8fa; vertical-align: bottom; }
thead th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer;
  text-align: inherit; color: inherit; }
th[aria-sort="ascending"] button::after { content: " ▲"; } th[aria-sort="descending"] button::after { content: " ▼"; }
tbody th { position: sticky; left: 0; z-index: 1; text-align: left; font-weight: 500; }
thead th:first-child { left: 0; z-index: 3; text-align: left; }
tbody th a { color: inherit; text-decoration: none; } tbody th a:hover { text-decoration: underline; }
td.na { color: #8c959f; }
table:not(.all) .extra { display: none; }
tr.recommended > * { background: var(--rec); } tr.recommended th { box-shadow: inset 4px 0 var(--rec-edge); }
tr.own-settings > *, tr.not-comparable > *, tr.incomplete > * { background: #f3f6fb; }
tr.own-settings td, tr.not-comparable td, tr.incomplete td { color: var(--muted); }
tr.status-failed > * { background: #ffebe9; } tr.status-skipped > *, tr.status-not-run > * { background: #f6f8fa; }
.flag { display: inline-block; font-size: 11px; padding: 0 .4em; margin-left: .3em; border-radius: 8px;
  background: #ddf4ff; color: #0a3069; } .flag.failed { background: #ffcecb; color: #82071e; }
.status { color: var(--muted); font-size: 12px; white-space: normal; max-width: 28rem; }
.legend, .controls { color: var(--muted); font-size: 12px; margin: .4rem 0; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; }
details { margin: .25rem 0; } summary { cursor: pointer; } details ul { margin: .2rem 0 .6rem; }
.about li { margin: .3rem 0; }
h2.workload { font-size: 1.35rem; border-top: 2px solid var(--line); padding-top: 1rem; margin-top: 2.5rem; }
h3 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
"""

# sorting: numbers by value, text by name; n/a (no data-v) always last, whichever the direction
SCRIPT = """
(() => {
  const table = document.getElementById("results");
  if (!table) return;  // the long-form workload alone: nothing to sort
  const heads = Array.from(table.tHead.rows[0].cells);
  heads.forEach((th, i) => th.querySelector("button").addEventListener("click", () => {
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    heads.forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const text = th.dataset.type === "text";
    const rows = Array.from(table.tBodies[0].rows);
    rows.sort((a, b) => {
      const x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
      if (x === undefined || y === undefined) return (x === undefined) - (y === undefined);
      const order = text ? x.localeCompare(y) : Number(x) - Number(y);
      return ascending ? order : -order;
    });
    table.tBodies[0].append(...rows);
  }));
  document.getElementById("all-columns").addEventListener("change", (e) => {
    table.classList.toggle("all", e.target.checked);
  });
})();
"""


def _inline(md: str) -> str:
    """One line of the Markdown report as escaped HTML (its only marks: **bold** and `code`)."""
    text = escape(md)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def sort_value(text: str | None) -> str | None:
    """What a cell sorts by: its first number (an interval's lower bound, ``30/40``'s 30); None for n/a."""
    match = _NUMBER.search(text) if text and text != NA else None
    return match.group() if match else None


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _flag_kind(flag: str) -> str:
    """"incomplete 30/40" -> "incomplete"; "not comparable", "own settings" as they are."""
    return "incomplete" if flag.startswith("incomplete") else flag


def _legend(summary: Summary) -> str:
    """The marks the table uses (tables.py's), each once."""
    used = {mark: _flag_kind(flag) for row in summary["recipes"] for mark, flag in zip(marks(row), flags(row))}
    shown = ["★ recommended", *(f"{m} {kind}" for m, kind in sorted(used.items(), key=lambda kv: kv[1]))]
    return escape(" · ".join(shown)) + (" (never recommended; see the recipe's notes)" if used else "") + \
        " · n/a: not measured or not applicable"


def _row_classes(row: SummaryRow, recommended: str | None) -> list[str]:
    classes = ["status-" + re.sub(r"[^a-z]+", "-", str(row["status"]).lower())]
    classes += [_flag_kind(flag).replace(" ", "-") for flag in flags(row)]
    if row["status"] == "ok" and row["recipe"] == recommended:
        classes.append("recommended")
    return classes


def _name_cell(i: int, row: SummaryRow, recommended: str | None) -> str:
    name = escape(row["recipe"])
    star = '<span class="star" title="recommended">★</span> ' if "recommended" in _row_classes(row, recommended) \
        else ""
    options = row.get("options")
    title = f' title="{escape("options: " + ", ".join(f"{k}={v}" for k, v in options.items()))}"' if options else ""
    out = f'<th scope="row" data-v="{name}">{star}<a href="#notes-{i}"{title}>{name}</a>'
    reasons = {"not comparable": row.get("not_comparable"), "own settings": row.get("own_settings")}
    for mark, flag in zip(marks(row), flags(row)):
        why = f' title="{escape(str(reasons[flag]))}"' if reasons.get(flag) else ""
        out += f'<span class="flag"{why}>{escape(mark)} {escape(flag)}</span>'
    if row["status"] != "ok":
        out += f'<span class="flag failed">{escape(str(row["status"]))}</span>'
        out += f'<div class="status">{escape(cells(row)[0])}</div>'
    return out + "</th>"


def _table(summary: Summary, recommended: str | None) -> str:
    shown = {c.key for c in select_columns(None, bool(summary.get("synthetic")))}
    extra = {c.key: "" if c.key in shown else ' class="extra"' for c in COLUMNS}
    head = ['<th scope="col" data-type="text"><button type="button">recipe</button></th>']
    for c in COLUMNS:
        label = "<br>".join(escape(part) for part in c.header.split("\n"))
        head.append(f'<th scope="col" data-key="{c.key}"{extra[c.key]}><button type="button">{label}</button></th>')
    body = []
    for i, row in enumerate(summary["recipes"]):
        tds = []
        if row["status"] == "ok":
            for c, text in zip(COLUMNS, cells(row)):
                value = sort_value(text)
                cls = [*(["extra"] if extra[c.key] else []), *(["na"] if value is None else [])]
                attrs = (f' class="{" ".join(cls)}"' if cls else "") + (f' data-v="{value}"' if value else "")
                tds.append(f"<td{attrs}>{escape(text)}</td>")
        else:  # the status and its reason are in the name cell: nothing to sort by
            tds = [f"<td{extra[c.key]}></td>" for c in COLUMNS]
        body.append(f'<tr class="{" ".join(_row_classes(row, recommended))}">'
                    + _name_cell(i, row, recommended) + "".join(tds) + "</tr>")
    return (f'<table id="results"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _notes(summary: Summary) -> str:
    """Each recipe's notes (tables.py's, one recipe at a time), open where the row is flagged or did not run."""
    parts = []
    for i, row in enumerate(summary["recipes"]):
        prefix = f"- {row['recipe']}: "
        notes = [_inline(line.removeprefix(prefix)) for line in md_notes({"recipes": [row]})]
        if row["status"] != "ok":
            notes.insert(0, escape(cells(row)[0]))
        if row.get("options"):
            notes.append("options: " + escape(", ".join(f"{k}={v}" for k, v in row["options"].items())))
        items = "".join(f"<li>{n}</li>" for n in notes) or "<li>no notes</li>"
        is_open = " open" if flags(row) or row["status"] != "ok" else ""
        parts.append(f'<details id="notes-{i}"{is_open}><summary>{escape(row["recipe"])}</summary>'
                     f"<ul>{items}</ul></details>")
    return "".join(parts)


def _throughput(summary: Summary) -> str:
    """tables.py's Throughput section (``--throughput-batches``) as a heading, its paragraph and a table; empty
    when no recipe ran it."""
    lines = throughput_lines(summary)
    if not lines:
        return ""
    text = [line for line in lines[1:] if line and not line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    head, body = rows[0], rows[2:]  # rows[1] is the Markdown alignment row
    th = "".join(f"<th>{escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return (f"<h2>Throughput</h2>{''.join(f'<p>{_inline(t)}</p>' for t in text)}"
            f'<div class="scroll"><table id="throughput"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>')


def _plots(summary: Summary, rec: Recommendation) -> str:
    """The plots of plots.py as SVG data URIs (an <img> each: their ids cannot clash, no script runs)."""
    import matplotlib

    svgs = {}
    with figures(summary, rec) as made:
        for name, fig, kwargs in made:
            buf = io.BytesIO()
            # text stays text (small, selectable); a fixed salt and no date: the same summary, the same page
            with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "whisperopt"}):
                fig.savefig(buf, format="svg", metadata={"Date": None}, **kwargs)
            svgs[Path(name).stem] = base64.b64encode(buf.getvalue()).decode()
    if not svgs:
        return "<p>No plots: no recipe finished.</p>"
    return "".join(f'<figure id="plot-{stem}"><img src="data:image/svg+xml;base64,{svgs[stem]}" '
                   f'alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
                   for stem, caption in PLOTS.items() if stem in svgs)


def _short_body(summary: Summary, rec: Recommendation, header: list[str]) -> str:
    """The short-form workload: results table, throughput, plots, notes per recipe, environment."""
    about = "".join(f"<li>{_inline(line[2:])}</li>" for line in header[1:] if line.startswith("- "))
    return f"""<h2>Results</h2>
<p class="controls"><label><input type="checkbox" id="all-columns"> all {len(COLUMNS)} columns</label>
(click a column header to sort; n/a last)</p>
<div class="scroll">{_table(summary, rec.get("recipe"))}</div>
<p class="legend">{_legend(summary)}</p>
{_throughput(summary)}
<h2>Plots</h2>
<section id="plots">{_plots(summary, rec)}</section>
<h2>Notes per recipe</h2>
<section id="notes">{_notes(summary)}</section>
<h2>How it was measured, and where</h2>
<section id="environment" class="about"><ul>{about}</ul></section>
"""


def html_text(summary: Summary | LongSummary) -> str:
    """The page, from the same summary dict as summary.md (its recommendation, or the default criteria's): the
    short-form workload, the long-form one, or both (``workloads``), the headline's recommendation at the top."""
    short, long = parts(summary)
    head = headline(summary)
    rec = (short.get("recommendation") or recommend(short)) if short is not None else None
    header = md_header(short) if short is not None else []
    title = header[0].removeprefix("# ") if short is not None else longform.title(long)
    both = short is not None and long is not None
    if both:
        title = f"whisperopt bench: {short['config']['model']}, short-form and long-form workloads"
    top = short_recommendation(short, rec) if head == "short" else long_recommendation(long, "recommendation")
    bodies = []
    for w in order(summary):
        heading = f'<h2 class="workload" id="workload-{w}">{LABELS[w]} workload</h2>\n' if both else ""
        if w == "short":
            own = short_recommendation(short, rec, "recommendation-short") if head != "short" else ""
            bodies.append(heading + own + _short_body(short, rec, header))
        else:
            bodies.append(heading + longform_html.section(long, with_recommendation=head != "long"))
    policy = (f"default-src 'none'; img-src data:; style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; "
              "base-uri 'none'; form-action 'none'")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
<h1>{escape(title)}</h1>
{top}
{"".join(bodies)}<script>{SCRIPT}</script>
</body>
</html>
"""


def write_html(summary: Summary | LongSummary, out_dir: Path) -> Path:
    """``out_dir``/summary.html."""
    path = Path(out_dir) / "summary.html"
    atomic_write_text(path, html_text(summary))
    return path
