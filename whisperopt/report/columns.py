"""The summary table's columns: each column's key (what ``--columns`` takes), header and cell text, the default
sets, and the marks a row carries. The one source of every figure's text: Markdown, the terminal, HTML and the
export card all format a figure through these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import WhisperoptError
from ..metrics.isa import path_text
from .records import SummaryRow

NA = "n/a"


@dataclass(frozen=True)
class Column:
    key: str  # the name --columns takes
    header: str  # a line break stacks it in the terminal (narrow columns); Markdown joins the lines
    text: Callable[[SummaryRow], str | None]  # None: n/a


def _figure(key: str, fmt: str, scale: float = 1.0) -> Callable[[SummaryRow], str | None]:
    return lambda r: None if r.get(key) is None else fmt.format(scale * r[key])


def interval(key: str, fmt: str) -> Callable[[SummaryRow], str | None]:
    def text(r: SummaryRow) -> str | None:
        ci = r.get(key)
        return None if not ci or ci[0] is None else f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
    return text


def delta(name: str) -> Callable[[SummaryRow], str | None]:
    """Signed points with ``*`` when the paired interval excludes 0 (a real difference, not resampling noise)."""
    def text(r: SummaryRow) -> str | None:
        d = r.get(f"{name}_delta")
        if d is None:
            return None
        d = 0.0 if round(d, 2) == 0 else d  # no "-0.00"
        return f"{d:+.2f}" + ("*" if r.get(f"{name}_delta_significant") else "")
    return text


def _roof(key: str, fmt: str, scale: float = 1.0, full_window: bool = False) -> Callable[[SummaryRow], str | None]:
    """A ``roofline`` figure (None: no fit; ``full_window``: only where the fixed part holds a whole encoder pass)."""
    def text(r: SummaryRow) -> str | None:
        roof = r.get("roofline") or {}
        if roof.get(key) is None or (full_window and not roof.get("full_window")):
            return None
        return fmt.format(scale * roof[key])
    return text


def roofline_text(r: SummaryRow) -> str | None:
    """One recipe's roofline figures in words (``metrics.roofline``)."""
    roof = r.get("roofline")
    if not roof:
        return None
    if roof.get("full_window") and roof.get("fixed_share") is not None:
        fixed = (f"fixed {roof['fixed_ms']:.0f} ms/utterance ({100 * roof['fixed_share']:.0f} % of the {roof['peak']} "
                 f"peak, the best its {roof.get('precision') or 'unknown'} matrix products can use")
        fixed += f"; {100 * roof['fixed_share_fp32']:.0f} % of fp32 peak)" if roof["peak"] != "fp32" else ")"
    elif roof.get("full_window"):  # a summary written before the per-precision peaks
        fixed = f"fixed {roof['fixed_ms']:.0f} ms/utterance ({100 * roof['fixed_share_fp32']:.0f} % of fp32 peak" + (
            f", {100 * roof['fixed_share_int8']:.0f} % of int8 peak)" if roof.get("fixed_share_int8") else ")")
    else:
        fixed = (f"fixed {roof['fixed_ms']:.0f} ms/utterance, less than one 30-s encoder pass at peak: the engine "
                 "encodes less than a full window, so its encoder time is in the per-token figure")
    return (f"{fixed}; {roof['per_token_ms']:.1f} ms per token ({roof['decoder_gb_s']:.1f} GB/s of "
            f"{roof['weight_bits']}-bit decoder weights); {roof['headroom']:.1f}× its floor on this machine")


def isa_text(r: SummaryRow) -> str | None:
    """The precision and ISA path a recipe's matrix products ran on (``metrics.isa``), e.g. ``int8 avx512_vnni``."""
    return path_text(r.get("isa_path"))


def _utterances(r: SummaryRow) -> str | None:
    return None if r.get("utterances") is None else f"{r['utterances']}/{r.get('expected_utterances', '?')}"


def _accuracy_columns(name: str, label: str) -> list[Column]:
    return [
        Column(name, f"{label}\n%", _figure(name, "{:.2f}")),
        Column(f"{name}_ci", f"{label}\n95% CI", interval(f"{name}_ci", "{:.2f}")),
        Column(f"{name}_delta", f"Δ{label}\npts", delta(name)),
        Column(f"{name}_delta_ci", f"Δ{label}\n95% CI", interval(f"{name}_delta_ci", "{:+.2f}")),
    ]


COLUMNS = [
    *_accuracy_columns("wer", "WER"),
    *_accuracy_columns("cer", "CER"),
    Column("eval_s", "eval\ns", _figure("eval_s", "{:.1f}")),
    Column("speedup", "speed\nup ×", _figure("speedup", "{:.2f}")),
    Column("latency_p50_s", "p50\nms", _figure("latency_p50_s", "{:.0f}", 1000)),
    Column("latency_p90_s", "p90\nms", _figure("latency_p90_s", "{:.0f}", 1000)),
    Column("rtfx", "RTFx", _figure("rtfx", "{:.1f}")),
    Column("tokens_per_s", "tokens\n/s", _figure("tokens_per_s", "{:.1f}")),
    Column("load_s", "load\ns", _figure("load_s", "{:.2f}")),
    Column("peak_ram_mb", "peak\nRAM MB", _figure("peak_ram_mb", "{:.0f}")),
    Column("run_ram_mb", "run\nRAM MB", _figure("run_ram_mb", "{:.0f}")),
    Column("peak_vram_mb", "peak\nVRAM MB", _figure("peak_vram_mb", "{:.0f}")),
    Column("cpu_percent", "CPU\n%", _figure("cpu_percent", "{:.0f}")),
    Column("size_mb", "size\nMB", _figure("size_mb", "{:.1f}")),
    Column("compression", "compr.\n×", _figure("compression", "{:.2f}")),
    Column("encoder_rel_error", "enc. rel.\nerr", _figure("encoder_rel_error", "{:.2e}")),
    Column("teacher_forced_agreement", "TF top-1\n%", _figure("teacher_forced_agreement", "{:.2f}", 100)),
    Column("isa", "ISA\npath", isa_text),
    Column("roofline_fixed", "fixed %\npeak", _roof("fixed_share", "{:.0f}", 100, full_window=True)),
    Column("roofline_decoder", "dec.\nGB/s", _roof("decoder_gb_s", "{:.1f}")),
    Column("headroom", "×\nfloor", _roof("headroom", "{:.1f}")),
    Column("utterances", "utts", _utterances),
    Column("paired_utterances", "paired\nutts", _figure("paired_utterances", "{:.0f}")),
]
BY_KEY = {c.key: c for c in COLUMNS}
# the terminal default: fits 100 columns with a 23-character recipe name; everything else is in --columns all,
# summary.md and summary.csv
DEFAULT_COLUMNS = ("wer", "wer_delta", "wer_delta_ci", "speedup", "latency_p50_s", "rtfx", "peak_ram_mb", "size_mb")
# synthetic weights have no WER deltas to show: fidelity takes their place (WER stays, as n/a)
SYNTHETIC_COLUMNS = ("wer", "teacher_forced_agreement", "speedup", "latency_p50_s", "rtfx", "peak_ram_mb", "size_mb")


def select_columns(spec: str | None, synthetic: bool = False) -> list[Column]:
    """``--columns``: None for the default set, ``all``, or comma-separated keys (``recipe`` is always shown)."""
    if not spec:
        return [BY_KEY[k] for k in (SYNTHETIC_COLUMNS if synthetic else DEFAULT_COLUMNS)]
    keys = [k.strip() for k in spec.split(",") if k.strip() and k.strip() != "recipe"]
    if keys == ["all"]:
        return list(COLUMNS)
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        raise WhisperoptError(f"unknown column(s) {', '.join(unknown)}; valid: all, {', '.join(BY_KEY)}")
    return [BY_KEY[k] for k in dict.fromkeys(keys)]


def flags(row: SummaryRow) -> list[str]:
    """Why a row's figures are not like the others' (kept in the table, never recommended)."""
    out = []
    if row.get("status") == "ok" and row.get("complete") is False:
        out.append(f"incomplete {row.get('utterances')}/{row.get('expected_utterances')}")
    if row.get("not_comparable"):
        out.append("not comparable")
    elif row.get("own_settings"):
        out.append("own settings")
    return out


def marks(row: SummaryRow) -> list[str]:
    """The mark after a flagged row's name, one per flag: † incomplete, § own settings, ‡ not comparable."""
    return ["†" if flag.startswith("incomplete") else "§" if flag == "own settings" else "‡" for flag in flags(row)]


def cells(row: SummaryRow, columns: list[Column] = COLUMNS) -> list[str]:
    if row["status"] != "ok":
        text = f"{row['status']}: {row['reason']}" if row.get("reason") else row["status"]
        return ([text] + [""] * (len(columns) - 1))[:len(columns)]
    return [c.text(row) or NA for c in columns]
