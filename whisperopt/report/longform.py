"""The long-form workload in the report: the rows a long-form bench saved (``bench/longform_runner.py``'s
``longform.json``: one table per long-form dataset, one row per recipe and mode) read back and checked, their
recommendation (``recommend.recommend_long``), and their Markdown, CSV and terminal tables. Reads data, measures
nothing."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..bench.longform_runner import RESULTS_FILE
from ..bench.records import LongDataset, LongRow
from ..errors import WhisperoptError
from ..files import read_json
from .recommend import recommend_long
from .records import SUMMARY_FILE, LongRecommendation, LongSummary, read_summary
from .tables import wer_text

NA = "n/a"
STRETCH_KINDS = ("silence", "noise", "music")
# figures a row's cells and CSV read: a number or null each (a damaged file must not print "None" or crash)
NUMBERS = ("files", "paired_files", "audio_s", "eval_s", "rtfx", "speedup", "wer", "wer_delta", "cer", "cer_delta",
           "insertions", "stretch_words", "stretch_seconds", "stretch_words_per_min", "stretch_words_change", "loops",
           "loop_extra_words", "start_error_median_s", "start_error_p90_s", "load_s", "peak_ram_mb", "run_ram_mb",
           "cpu_percent", "threads")
INTERVALS = ("wer_ci", "wer_delta_ci", "cer_ci", "cer_delta_ci")
TEXTS = ("recipe", "mode", "status", "reason", "own_settings", "reference", "dataset")


def _number(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _row_problem(r) -> str | None:
    if not isinstance(r, dict):
        return "a row is not an object"
    for k in TEXTS:
        if r.get(k) is not None and not isinstance(r[k], str):
            return f"{k} of a row is not text"
    if not r.get("recipe") or not r.get("mode") or not r.get("status"):
        return "a row has no recipe, mode or status"
    for k in NUMBERS:
        if not _number(r.get(k)):
            return f"{k} of {r['recipe']} {r['mode']} is not a number"
    for k in INTERVALS:
        ci = r.get(k)
        if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(_number(x) for x in ci)):
            return f"{k} of {r['recipe']} {r['mode']} is not an interval"
    kinds = r.get("stretch_words_by_kind")
    if kinds is not None and not (isinstance(kinds, dict) and all(_number(v) for v in kinds.values())):
        return f"stretch_words_by_kind of {r['recipe']} {r['mode']} is not counts by kind"
    return None


def _problem(record) -> str | None:
    """What makes ``record`` no long-form results record, or None."""
    if not isinstance(record, dict) or not isinstance(record.get("datasets"), dict):
        return "not an object with datasets"
    if not isinstance(record.get("synthetic", False), bool) or not _number(record.get("threads")):
        return "synthetic or threads is of the wrong type"
    for name, block in record["datasets"].items():
        if not isinstance(block, dict) or not isinstance(block.get("rows"), list):
            return f"dataset {name[:80]} has no rows"
        if not all(_number(block.get(k)) for k in ("files", "audio_min", "stretch_min")):
            return f"dataset {name[:80]}: files, audio_min or stretch_min is not a number"
        if block.get("reference") is not None and not isinstance(block["reference"], str):
            return f"dataset {name[:80]}: its reference is not text"
        for r in block["rows"]:
            why = _row_problem(r)
            if why:
                return f"dataset {name[:80]}: {why}"
    return None


def read_longform(out_dir: Path) -> LongSummary | None:
    """The long-form results of ``out_dir`` (its ``longform.json``; a results folder written before that file
    existed: its summary.json when it holds the long-form workload alone), or None where it holds none. A damaged
    file is a one-line error naming it."""
    out_dir = Path(out_dir)
    path = out_dir / RESULTS_FILE
    fix = "re-run the long-form bench command with the same --out to rewrite it (decoded files are kept)"
    if not path.is_file():
        path = out_dir / SUMMARY_FILE
        if (out_dir / "run.json").exists() or not path.is_file():
            return None
        try:
            record = read_summary(out_dir, workload="long")
        except WhisperoptError:  # damaged, or no long-form summary: no results to go by (longform.json is written now)
            return None
    else:
        record = read_json(path, "long-form results", fix)
    why = _problem(record)
    if why:
        raise WhisperoptError(f"long-form results {path} are damaged ({why}); {fix}")
    return {k: v for k, v in record.items() if k not in ("recommendation", "budget", "headline", "wer_note")} | \
        ({"synthetic": True} if record.get("wer_note") else {})


def summarise_long(record: LongSummary, wer_budget: float = 1.0, rank_by: str = "eval_s") -> LongSummary:
    """The long-form record with its recommendation for these criteria (``recommend.recommend_long``)."""
    summary: LongSummary = {**record, "workload": "long", "budget": wer_budget, "rank_by": rank_by}
    summary["recommendation"] = recommend_long(summary, wer_budget, rank_by)
    return summary


def _fmt(x, digits=2, unit=""):
    return NA if x is None else f"{x:.{digits}f}{unit}"


def _ci(pair, sign=""):
    return "" if not pair or pair[0] is None else f" [{pair[0]:{sign}.2f}, {pair[1]:{sign}.2f}]"


def row_name(r: LongRow) -> str:
    return f"{r['mode']} (own settings)" if r.get("own_settings") else r["mode"]


def row_cells(r: LongRow) -> list[str]:
    """The cells after recipe and mode, as ``HEADERS`` names them (the status and its reason for a row not run)."""
    if r["status"] != "ok":
        return [f"{r['status']}: {r.get('reason') or ''}".rstrip(": ")] + [""] * (len(HEADERS) - 1)
    kinds = "/".join(str((r.get("stretch_words_by_kind") or {}).get(k, 0)) for k in STRETCH_KINDS)
    change = r.get("stretch_words_change")
    return [_fmt(r.get("rtfx"), 1), _fmt(r.get("speedup"), 2, "×"), _fmt(r.get("wer")) + _ci(r.get("wer_ci")),
            _fmt(r.get("wer_delta")) + _ci(r.get("wer_delta_ci")), str(r.get("insertions", NA)),
            f"{r.get('stretch_words', NA)} ({kinds})", _fmt(None if change is None else 100 * change, 0, " %"),
            str(r.get("loops", NA)), f"{_fmt(r.get('start_error_median_s'))} / {_fmt(r.get('start_error_p90_s'))}",
            _fmt(r.get("run_ram_mb"), 0)]


HEADERS = ("RTFx", "speed-up", "WER % [95 % CI]", "ΔWER points [95 % CI]", "inserted words",
           "words in stretches (silence/noise/music)", "Δ stretch words", "loops", "start error median / p90 s",
           "run RAM MiB")
NOTE = ("RTFx: audio seconds per wall second, per file from the call to its last segment (audio decoding included). "
        "Words in stretches: made-up words - hypothesis words placed (word times, else spread over the segment, or "
        "over the speech a VAD pipeline kept in it) inside an inserted non-speech stretch shrunk by 0.5 s that the "
        "word alignment against the reference calls inserted (a real word of a segment spanning a stretch is not "
        "counted). train-clean-5 is not a test split. The machine may be shared: times are indicative.")


def title(summary: LongSummary) -> str:
    return f"Long-form benchmark: {summary.get('model')}, {summary.get('threads')} threads, {summary.get('cpu')}"


def block_heading(name: str, block: LongDataset) -> str:
    return (f"{name} ({block['files']} files, {block['audio_min']:.1f} min, {block['stretch_min']:.1f} min of inserted "
            f"non-speech); deltas against {block.get('reference') or 'no reference'}")


def winner_text(rec: LongRecommendation) -> str:
    """The recommended recipe and mode's figures in one line."""
    parts = [f"RTFx {_fmt(rec.get('rtfx'), 1)}"]
    if rec.get("speedup") is not None:
        parts.append(f"{rec['speedup']:.2f}× {rec.get('reference')}")
    if rec.get("wer") is not None:
        parts.append(wer_text(rec))
    if rec.get("peak_ram_mb") is not None:
        parts.append(f"peak RAM {rec['peak_ram_mb']:.0f} MiB")
    return ", ".join(parts)


def recommendation_lines(name: str, rec: LongRecommendation, bullet: str = "- ", bold: str = "**",
                         label: str = "recommended") -> list[str]:
    """One dataset's recommendation: winner, criterion, runner-ups, exclusions (as tables.recommendation_lines)."""
    if rec["recipe"] is None:
        lines = [f"{bullet}{label} on {name}: none ({rec['reason']})"]
    else:
        lines = [f"{bullet}{label} on {name}: {bold}{rec['recipe']} {rec['mode']}{bold}: {winner_text(rec)}"]
    lines.append(f"{bullet}criterion: {rec['criterion']}")
    if rec.get("ranking", [])[1:]:
        lines.append(f"{bullet}runner-ups, in order: {', '.join(rec['ranking'][1:])}")
    if rec.get("excluded"):
        lines.append(f"{bullet}excluded:")
        lines.extend(f"  {bullet}{who}: {why}" for who, why in rec["excluded"].items())
    return lines


def markdown_lines(summary: LongSummary, depth: int = 1) -> list[str]:
    """summary.md's long-form part; ``depth``: the level of its title (2 inside a report of both workloads)."""
    h = "#" * depth
    lines = [f"{h} {title(summary)}", ""]
    if summary.get("synthetic"):
        lines += ["synthetic weights: WER/CER n/a (speed and memory only), so no recommendation", ""]
    recs = summary.get("recommendation") or {}
    for name, block in summary["datasets"].items():
        lines += [f"{h}# {block_heading(name, block)}", "",
                  "| recipe | mode | " + " | ".join(HEADERS) + " |", "|---|---|" + "---:|" * len(HEADERS)]
        for r in block["rows"]:
            lines.append(f"| {r['recipe']} | {row_name(r)} | " + " | ".join(row_cells(r)) + " |")
        if name in recs:
            lines += [""] + recommendation_lines(name, recs[name])
        lines.append("")
    return lines + [NOTE]


def markdown(summary: LongSummary) -> str:
    return "\n".join(markdown_lines(summary)) + "\n"


def _split(row: LongRow) -> dict:
    out = dict(row)
    for key in INTERVALS:
        out[f"{key}_lo"], out[f"{key}_hi"] = row.get(key) or (None, None)
    for kind in STRETCH_KINDS:
        out[f"stretch_words_{kind}"] = (row.get("stretch_words_by_kind") or {}).get(kind)
    return out


CSV_FIELDS = ("dataset", "recipe", "mode", "status", "reason", "own_settings", "recommended", "files", "paired_files",
              "audio_s", "eval_s", "rtfx", "speedup", "wer", "wer_ci_lo", "wer_ci_hi", "wer_delta", "wer_delta_ci_lo",
              "wer_delta_ci_hi", "wer_delta_significant", "cer", "cer_ci_lo", "cer_ci_hi", "cer_delta",
              "cer_delta_ci_lo", "cer_delta_ci_hi", "insertions", "stretch_words", "stretch_words_silence",
              "stretch_words_noise", "stretch_words_music", "stretch_words_change", "loops", "loop_extra_words",
              "start_error_median_s", "start_error_p90_s", "load_s", "peak_ram_mb", "run_ram_mb", "cpu_percent",
              "threads", "reference")


def _csv_value(value):
    if isinstance(value, float):
        return round(value, 4)
    return value


def csv_text(summary: LongSummary) -> str:
    """summary-long.csv: one line per dataset, recipe and mode (intervals split into _lo/_hi, stretch words by
    kind), ``recommended`` true on the row recommended for its dataset."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_FIELDS)
    recs = summary.get("recommendation") or {}
    for name, block in summary["datasets"].items():
        rec = recs.get(name) or {}
        for r in block["rows"]:
            flat = _split(r) | {"dataset": name, "recommended": (r["recipe"], r["mode"]) ==
                                (rec.get("recipe"), rec.get("mode")) and r["status"] == "ok"}
            writer.writerow([_csv_value(flat.get(k)) for k in CSV_FIELDS])
    return buf.getvalue()


# the terminal's headers, stacked to fit (the Markdown ones are HEADERS)
TERMINAL_HEADERS = ("RTFx", "speed\nup", "WER %\n[95 % CI]", "ΔWER pts\n[95 % CI]", "inserted\nwords",
                    "in stretches\nsil/noise/mus", "Δ stretch\nwords", "loops", "start err s\nmedian/p90",
                    "run RAM\nMiB")


def rich_tables(summary: LongSummary) -> list:
    """One terminal table per long-form dataset (every column: the long-form table has no --columns); a row not
    run says so, its reason in the caption."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    tables = []
    for name, block in summary["datasets"].items():
        notes = [f"{r['recipe']} {r['mode']}: {r['status']}" + (f": {r['reason']}" if r.get("reason") else "")
                 for r in block["rows"] if r["status"] != "ok"]
        if summary.get("synthetic"):
            notes.insert(0, "synthetic weights: WER/CER n/a")
        table = Table(title=Text(f"long-form — {block_heading(name, block)}"), box=box.SIMPLE_HEAD, show_edge=False,
                      pad_edge=False, collapse_padding=True, caption=Text("\n".join(notes)) if notes else None,
                      caption_justify="left")
        table.add_column("recipe", no_wrap=True)
        table.add_column("mode", no_wrap=True)
        for header in TERMINAL_HEADERS:
            table.add_column(header, justify="right", no_wrap=True)
        for r in block["rows"]:
            star = "★" if recommended_row(summary, name, r) else ""
            cells = row_cells(r) if r["status"] == "ok" else [r["status"]] + [""] * (len(HEADERS) - 1)
            table.add_row(Text(r["recipe"] + star), Text(row_name(r)), *[Text(c) for c in cells])
        tables.append(table)
    return tables


def recommended_row(summary: LongSummary, name: str, row: LongRow) -> bool:
    rec = (summary.get("recommendation") or {}).get(name) or {}
    return row["status"] == "ok" and (row["recipe"], row["mode"]) == (rec.get("recipe"), rec.get("mode"))

