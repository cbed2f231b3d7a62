"""Both workloads of one results folder: the short-form bench's (run.json, per-recipe rows; ``summary.summarise``) and
the long-form bench's (``longform.json``; ``longform.summarise_long``), side by side in one summary, with one of the
two recommendations the headline (``--workload short|long``).

The summary dict (and summary.json) is the short-form summary as it always was, with ``"longform"`` holding the
long-form one when both were run, so readers of the short-form figures (``export``) are unchanged; a folder holding the
long-form workload alone has the long-form summary at the top (``"workload": "long"``). ``"headline"`` names the
workload whose recommendation leads summary.md, summary.html and the terminal output."""

from __future__ import annotations

from pathlib import Path

from ..bench.longform_runner import RESULTS_FILE
from ..errors import WhisperoptError
from ..files import atomic_write_text
from . import longform, tables
from .recommend import baseline_name, check_criteria, recommend
from .records import SUMMARY_FILE, LongSummary, Summary, write_summary
from .summary import summarise

WORKLOADS = ("short", "long")
LABELS = {"short": "Short-form", "long": "Long-form"}
LONG_CSV = "summary-long.csv"


def summarise_results(out_dir: Path, wer_budget: float = 1.0, min_agreement: float = 0.95, rank_by: str = "eval_s",
                      workload: str | None = None) -> Summary | LongSummary:
    """Every workload ``out_dir`` holds, each with its recommendation for these criteria; ``workload``: the headline
    (default: short-form where it was run, else long-form), one the folder must hold."""
    out_dir = Path(out_dir)
    check_criteria(wer_budget, min_agreement, rank_by)
    if workload is not None and workload not in WORKLOADS:
        raise WhisperoptError(f"unknown --workload {workload!r}; choose short or long")
    has_short = (out_dir / "run.json").exists()
    record = longform.read_longform(out_dir)
    if not has_short and record is None:
        raise WhisperoptError(f"no benchmark results in {out_dir} (neither run.json nor {RESULTS_FILE})")
    head = workload or ("short" if has_short else "long")
    if head == "short" and not has_short:
        raise WhisperoptError(f"--workload short: {out_dir} holds no short-form results (run.json missing)")
    if head == "long" and record is None:
        raise WhisperoptError(f"--workload long: {out_dir} holds no long-form results ({RESULTS_FILE} missing; run "
                              f"`whisperopt bench --dataset librispeech-long:<split> --out {out_dir}`)")
    long = longform.summarise_long(record, wer_budget, rank_by) if record is not None else None
    if not has_short:
        return {**long, "headline": "long"}
    summary = summarise(out_dir, wer_budget, min_agreement, rank_by)
    summary.update(workload="short", headline=head)
    if long is not None:
        summary["longform"] = long
    return summary


def parts(summary: Summary | LongSummary) -> tuple[Summary | None, LongSummary | None]:
    """(the short-form summary, the long-form summary) of a summary dict; None for a workload not run."""
    if summary.get("workload") == "long":
        return None, summary
    return summary, summary.get("longform")


def headline(summary: Summary | LongSummary) -> str:
    short, _ = parts(summary)
    return summary.get("headline") or ("short" if short is not None else "long")


def order(summary: Summary | LongSummary) -> list[str]:
    """The workloads ``summary`` holds, the headline first."""
    held = [w for w, part in zip(WORKLOADS, parts(summary)) if part is not None]
    return sorted(held, key=lambda w: w != headline(summary))


def short_recommendation_lines(short: Summary, **kwargs) -> list[str]:
    return tables.recommendation_lines(short.get("recommendation") or recommend(short),
                                       baseline=baseline_name(short), **kwargs)


def long_recommendation_lines(long: LongSummary, **kwargs) -> list[str]:
    return [line for name, rec in (long.get("recommendation") or {}).items()
            for line in longform.recommendation_lines(name, rec, **kwargs)]


def headline_lines(summary: Summary | LongSummary, **kwargs) -> list[str]:
    """The headline workload's winner and criterion (per dataset for the long-form workload)."""
    short, long = parts(summary)
    if headline(summary) == "short":
        return short_recommendation_lines(short, **kwargs)[:2]
    return [line for name, rec in (long.get("recommendation") or {}).items()
            for line in longform.recommendation_lines(name, rec, **kwargs)[:2]]


def _section(lines: list[str], label: str) -> list[str]:
    """A workload's own report as a section of the combined one: its title under the workload's name, its
    headings one level down."""
    first = lines[0].lstrip("# ")
    return [f"## {label} workload — {first}"] + [f"#{line}" if line.startswith("#") else line for line in lines[1:]]


def markdown(summary: Summary | LongSummary) -> str:
    """summary.md: a workload's report as it is when the folder holds one; both, the headline first, otherwise."""
    short, long = parts(summary)
    if long is None:
        return tables.markdown(short)
    if short is None:
        return longform.markdown(long)
    head = headline(summary)
    other = "long" if head == "short" else "short"
    lines = [f"# whisperopt bench: {short['config']['model']}, short-form and long-form workloads", "",
             f"Headline: the {LABELS[head].lower()} workload's recommendation (`--workload {other}` makes the "
             f"{LABELS[other].lower()} one the headline).", "", *headline_lines(summary), ""]
    for w in order(summary):
        own = tables.markdown(short) if w == "short" else longform.markdown(long)
        lines += _section(own.rstrip("\n").split("\n"), LABELS[w]) + [""]
    return "\n".join(lines)


def terminal_parts(summary: Summary | LongSummary, columns: str | None = None) -> list:
    """What the terminal shows, in order: per workload (the headline first) its table(s) (rich renderables), then
    its recommendation as plain text."""
    short, long = parts(summary)
    out = []
    for w in order(summary):
        if w == "short":
            out += [tables.rich_table(short, columns),
                    "\n".join(["", *short_recommendation_lines(short, bullet="", bold="", label="recommendation")])]
        else:
            out += [*longform.rich_tables(long),
                    "\n".join(["", *long_recommendation_lines(long, bullet="", bold="",
                                                              label="long-form recommendation")])]
    return out


def write_reports(summary: Summary | LongSummary, out_dir: Path) -> dict[str, Path]:
    """summary.md and summary.json, summary.csv (short-form) and summary-long.csv (long-form) for the workloads
    held; ``csv`` names the headline's. The short-form recommendation is computed with the default criteria if
    ``summarise`` did not attach one."""
    short, long = parts(summary)
    if short is not None and "recommendation" not in short:
        short["recommendation"] = recommend(short)
    out_dir = Path(out_dir)
    paths = {"md": out_dir / "summary.md", "json": out_dir / SUMMARY_FILE}
    if short is not None:
        paths["csv"] = paths["csv_short"] = out_dir / "summary.csv"
        atomic_write_text(paths["csv_short"], tables.csv_text(short))
    if long is not None:
        paths["csv_long"] = out_dir / LONG_CSV
        atomic_write_text(paths["csv_long"], longform.csv_text(long))
        if headline(summary) == "long" or short is None:
            paths["csv"] = paths["csv_long"]
    atomic_write_text(paths["md"], markdown(summary))
    write_summary(out_dir, summary)
    return paths
