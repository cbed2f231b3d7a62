"""``whisperopt report``: the tables of a results directory rendered again (``report``)."""

from __future__ import annotations

from pathlib import Path

from .common import add_recommend_args, check_report_args, failures, show


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="re-render tables from a results directory")
    r.add_argument("results_dir")
    r.add_argument("--format", default="table", choices=["table", "markdown", "csv", "json"])
    add_recommend_args(r)
    r.set_defaults(func=run)


def run(args) -> int:
    from ..report import summarise_results, write_all

    check_report_args(args)
    summary = summarise_results(Path(args.results_dir), args.wer_budget, args.min_agreement, args.rank_by,
                                args.workload)
    paths = write_all(summary, Path(args.results_dir))
    if args.format == "table":
        show(summary, args.columns)
    else:  # the saved file as it is, ending in one newline
        text = paths["md" if args.format == "markdown" else args.format].read_text()
        print(text, end="" if text.endswith("\n") else "\n")
    return failures(summary)
