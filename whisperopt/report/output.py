"""Every file a report writes into a results folder: summary.md/.csv/.json, the plots and summary.html."""

from __future__ import annotations

from pathlib import Path

from ..files import write_failure
from .html import write_html
from .plots import write_plots
from .workloads import write_reports


def write_all(summary: dict, out: Path) -> dict[str, Path]:
    """summary.md/.csv/.json, the plots and summary.html (``html`` in the paths returned, as ``write_reports``'
    others); a results directory that cannot take them is a one-line error."""
    try:
        paths = write_reports(summary, out)
        write_plots(summary, out)
        paths["html"] = write_html(summary, out)
    except OSError as exc:
        err = write_failure(exc, out)
        if err is None:
            raise
        raise err from None
    return paths


def failed_recipes(summary: dict) -> list[dict]:
    """The summary's recipes that failed or whose results are damaged (none: long-form alone). A recipe skipped for
    want of an engine or device is not a failure."""
    return [r for r in summary.get("recipes", []) if r["status"] == "failed"]
