"""Render a benchmark summary as Markdown, CSV, JSON and a rich terminal table. Reads data, measures nothing."""

from __future__ import annotations

import csv
import io

from ..metrics.roofline import peaks_text
from .columns import COLUMNS, NA, Column, cells, delta, flags, interval, isa_text, marks, roofline_text, select_columns
from .recommend import baseline_name
from .records import LongRecommendation, Recommendation, Summary, SummaryRow


def md_header(summary: Summary) -> list[str]:
    lines, baseline = [], baseline_name(summary)
    cfg, env = summary["config"], summary.get("environment", {})
    cpu = env.get("cpu", {})
    ds = env.get("dataset", {})
    lines.append(f"# whisperopt bench: {cfg['model']} on {ds.get('name', cfg['dataset'])}")
    lines.append("")
    lines.append(f"- utterances: {ds.get('utterances', '?')} ({ds.get('total_s', 0) / 60:.1f} min of audio); "
                 f"decoding: beam {cfg['decode']['beam_size']}, language {cfg['decode']['language']}, "
                 f"task {cfg['decode']['task']}, batch {cfg['decode']['batch_size']}, no timestamps")
    lines.append(f"- device: {cfg['device']}; threads: {cfg['threads']}; OS: {env.get('os', '?')}; "
                 f"CPU: {cpu.get('model', '?')} [{' '.join(cpu.get('isa', []))}]"
                 + (f"; GPU: {env['gpus'][0]['name']}" if env.get("gpus") else ""))
    versions = env.get("versions", {})
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if summary.get("synthetic"):
        lines.append("- **synthetic checkpoint** (random weights): WER/CER are n/a; each utterance decodes exactly as "
                     "many tokens as its reference transcript (+ end-of-text), so time and memory equal a real run")
    else:
        boot = summary.get("bootstrap") or {}
        lines.append(f"- WER/CER in percent; ΔWER/ΔCER in percentage points against {baseline} on the utterances "
                     f"both have; 95 % CIs: percentile bootstrap over utterances ({boot.get('resamples', '?')} "
                     "resamples, paired for deltas); `*` marks a delta whose CI excludes 0")
    if env.get("peaks"):
        lines.append(f"- roofline: this machine's peaks {peaks_text(env['peaks'])} ({env['peaks'].get('method')}); "
                     "each recipe's batch-1 latencies fitted as fixed + per-token × tokens; fixed % = encoder and "
                     "cross-attention FLOPs of one 30-s window / fixed time / the best peak the precision of its "
                     "matrix products can use (ISA path: fp32 the fp32 peak, bf16/fp16 the better of bf16 and fp32, "
                     "int8 the better of int8 and fp32); dec. GB/s = decoder weight "
                     "bytes read per token / per-token time; × floor = eval time / (encoder at that peak + each "
                     "token at the larger of its weight bytes / copy bandwidth and its FLOPs / that peak)")
        if env["peaks"].get("backends"):
            lines.append("- peaks measured with: " + "; ".join(f"{k}: {v}" for k, v in env["peaks"]["backends"].items()))
    if cpu.get("kernels"):
        lines.append("- fastest kernel path per precision on this CPU (from its flags): "
                     + ", ".join(f"{k} {v}" for k, v in cpu["kernels"].items()))
    lines.append(f"- speed-up and compression are relative to {baseline} (compression: fp32 parameter bytes / "
                 f"weight bytes on disk); fidelity is against {baseline} on CPU, "
                 f"{cfg.get('fidelity_utterances')} utterances")
    return lines


def _md_table(summary: Summary) -> list[str]:
    header = ["recipe"] + [c.header.replace("\n", " ") for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|"]
    for row in summary["recipes"]:
        name = row["recipe"] + "".join(f" ({f})" for f in flags(row))
        lines.append("| " + " | ".join([name] + cells(row)) + " |")
    return lines


def md_notes(summary: Summary) -> list[str]:
    notes = []
    for r in summary["recipes"]:
        if r.get("not_comparable"):
            notes.append(f"- {r['recipe']}: **not comparable**: {r['not_comparable']}")
        elif r.get("own_settings"):
            notes.append(f"- {r['recipe']}: **own settings**: {r['own_settings']}")
        if r.get("status") == "ok" and r.get("complete") is False:
            notes.append(f"- {r['recipe']}: **incomplete**: {r.get('utterances')} of {r.get('expected_utterances')} "
                         "utterances measured (re-run the same command to resume)")
        if r.get("hardware_note"):
            notes.append(f"- {r['recipe']}: **hardware**: {r['hardware_note']}")
        for key in ("fidelity_note", "fidelity_method"):
            if r.get(key):
                notes.append(f"- {r['recipe']}: fidelity: {r[key]}")
        if r.get("decode_settings"):
            notes.append(f"- {r['recipe']}: ran with " + ", ".join(f"{k}={v}" for k, v in r["decode_settings"].items()))
        if isa_text(r):
            notes.append(f"- {r['recipe']}: ISA path: {isa_text(r)} ({r['isa_path'].get('engine')})")
        if roofline_text(r):
            notes.append(f"- {r['recipe']}: roofline: {roofline_text(r)}")
        if r.get("components") or r.get("component_speedup"):
            notes.append(f"- {r['recipe']}: per component: {component_text(r)}")
    return notes


def wer_text(rec: Recommendation | LongRecommendation) -> str:
    """A recommended row's WER, with its paired delta and interval when it has them (both workloads)."""
    wer = f"WER {rec['wer']:.2f} %"
    if rec.get("wer_delta") is not None and rec.get("wer_delta_ci"):
        lo, hi = rec["wer_delta_ci"]
        wer += f" (ΔWER {rec['wer_delta']:+.2f} points, 95 % CI [{lo:+.2f}, {hi:+.2f}])"
    return wer


def winner_text(rec: Recommendation, baseline: str) -> str:
    """The recommended recipe's figures in one line (speed-up against ``baseline``)."""
    parts = []
    if rec.get("speedup") is not None:
        parts.append(f"{rec['speedup']:.2f}× {baseline}")
    if rec.get("eval_s") is not None:
        parts.append(f"eval {rec['eval_s']:.1f} s")
    if rec.get("wer") is not None:
        parts.append(wer_text(rec))
    else:
        parts.append("WER n/a")
        if rec.get("teacher_forced_agreement") is not None:
            parts.append(f"TF top-1 {100 * rec['teacher_forced_agreement']:.2f} %")
    if rec.get("size_mb") is not None:
        parts.append(f"{rec['size_mb']:.1f} MB on disk")
    if rec.get("peak_ram_mb") is not None:
        parts.append(f"peak RAM {rec['peak_ram_mb']:.0f} MB")
    return ", ".join(parts)


def recommendation_lines(rec: Recommendation, bullet: str = "- ", bold: str = "**", label: str = "recommended",
                         baseline: str | None = None) -> list[str]:
    """Winner, criterion, runner-ups and exclusions (Markdown bullets, or plain text with other arguments);
    ``baseline``: the recipe speed-ups are against (default: the registry's)."""
    if rec["recipe"] is None:
        lines = [f"{bullet}{label}: none ({rec['reason']})"]
    else:
        lines = [f"{bullet}{label}: {bold}{rec['recipe']}{bold}: {winner_text(rec, baseline or baseline_name())}"]
    lines.append(f"{bullet}criterion: {rec['criterion']}")
    runner_ups = rec.get("ranking", [])[1:]
    if runner_ups:
        lines.append(f"{bullet}runner-ups, in order: {', '.join(runner_ups)}")
    if rec.get("excluded"):
        lines.append(f"{bullet}excluded:")
        lines.extend(f"  {bullet}{name}: {why}" for name, why in rec["excluded"].items())
    return lines


def throughput_lines(summary: Summary) -> list[str]:
    """Throughput mode (``--throughput-batches``): RTFx at each batch size, the best batch and its gain, the run RAM
    there, and whether batching changed any transcript; with ``--pack`` also the packed pass (``packed_cells``).
    Empty when no recipe ran either."""
    rows = [r for r in summary["recipes"] if r.get("throughput")]
    if not rows:
        return []
    batches = sorted({p["batch"] for r in rows for p in r["throughput"]})
    packed = any(r.get("packed") for r in rows)
    lines = ["## Throughput", "",
             "Each recipe decoded the same utterances again at each batch size (audio decoded beforehand; the first "
             "batch size is the measured pass). RTFx = audio seconds per wall second; gain = best RTFx / RTFx at "
             "batch 1; same text = share of transcripts identical to the measured pass.", "",
             *([PACKED_TEXT.format(gap=next(r["packed"]["gap_s"] for r in rows if r.get("packed"))), ""]
               if packed else []),
             "| recipe | " + " | ".join(f"RTFx b{b}" for b in batches) + " | best batch | gain | run RAM MB at best "
             "| same text at best |" + (" RTFx packed | packed gain | windows | ΔWER packed [95 % CI] |"
                                         if packed else ""),
             "|---|" + "---:|" * (len(batches) + 4 + 4 * packed)]
    for r in rows:
        by = {p["batch"]: p for p in r["throughput"]}
        best = by[r["best_batch"]]
        cells_ = [f"{by[b]['rtfx']:.1f}" if b in by else "" for b in batches]
        ram = f"{best['run_ram_mb']:.0f}" if best.get("run_ram_mb") else "n/a"
        gain = f"{r['throughput_gain']:.2f}×" if r.get("throughput_gain") else "n/a"
        lines.append(f"| {r['recipe']} | " + " | ".join(cells_) + f" | {r['best_batch']} | {gain} | {ram} | "
                     f"{100 * best['same_text']:.0f} % |" + ("".join(f" {c} |" for c in packed_cells(r))
                                                            if packed else ""))
    notes = [f"{r['recipe']}: {r['packed'].get('skipped') or r['packed'].get('note')}" for r in rows
             if r.get("packed") and (r["packed"].get("skipped") or r["packed"].get("note"))]
    return lines + (["", *notes] if notes else [])


PACKED_TEXT = ("Packed (`--pack`): the same utterances joined several to a 30-s window with {gap:g} s of silence "
               "after each, decoded with timestamps at the measured pass's batch size (in windows) and split back by "
               "timestamp; packed gain = RTFx packed / RTFx of the measured pass; windows = windows decoded for "
               "the utterances (+ clips decoded again alone where a window could not be split); ΔWER packed = "
               "packed WER − the measured (unpacked) pass's WER on the same utterances, percentage points, paired "
               "bootstrap CI, `*` when it excludes 0.")


def packed_cells(r: SummaryRow) -> list[str]:
    """RTFx packed, packed gain, windows, ΔWER packed [CI] of one summary row (n/a where not measured)."""
    p = r.get("packed") or {}
    if not p or p.get("skipped"):
        return ["n/a"] * 4
    windows = f"{p['windows']}" + (f" + {p['alone']}" if p.get("alone") else "") + f" for {p['utterances']}"
    change = delta("wer")({"wer_delta": p.get("wer_delta"), "wer_delta_significant": p.get("wer_delta_significant")})
    ci = interval("wer_delta_ci", "{:+.2f}")(p)
    return [f"{p['rtfx']:.1f}" if p.get("rtfx") else "n/a", f"{r['packed_gain']:.2f}×" if r.get("packed_gain")
            else "n/a", windows, f"{change} {ci}" if change is not None else "n/a"]


def markdown(summary: Summary) -> str:
    lines = md_header(summary) + [""] + _md_table(summary)
    notes = md_notes(summary)
    if notes:
        lines += [""] + notes
    if throughput_lines(summary):
        lines += [""] + throughput_lines(summary)
    if summary.get("recommendation"):
        lines += ["", "## Recommendation", ""] + recommendation_lines(summary["recommendation"],
                                                                      baseline=baseline_name(summary))
    return "\n".join(lines) + "\n"


def component_text(r: SummaryRow) -> str:
    """Encoder / decoder: median ms per call, speed-up vs the same loop's fp32 IR, weight MB and compression."""
    comps, ms, sp = r.get("components") or {}, r.get("component_ms") or {}, r.get("component_speedup") or {}
    parts = []
    for comp in ("encoder", "decoder"):
        bits = []
        if ms.get(f"{comp}_ms_median") is not None:
            bits.append(f"{ms[f'{comp}_ms_median']:.1f} ms/call median")
        if sp.get(comp) is not None:
            bits.append(f"{sp[comp]:.2f}× vs {sp['baseline']}")
        c = comps.get(comp) or {}
        if c.get("bin_bytes"):
            bits.append(f"{c['bin_bytes'] / 1024 / 1024:.1f} MB" +
                        (f" ({c['compression']:.2f}× smaller than fp32 IR)" if c.get("compression") else ""))
        if bits:
            parts.append(f"{comp} " + ", ".join(bits))
    if sp.get("whole") is not None:
        parts.append(f"whole run {sp['whole']:.2f}× vs {sp['baseline']}")
    return "; ".join(parts)


def _accuracy_csv(name: str) -> list[tuple[str, int | str | None]]:
    return [(name, 2), (f"{name}_ci_lo", 2), (f"{name}_ci_hi", 2), (f"{name}_delta", 2),
            (f"{name}_delta_ci_lo", 2), (f"{name}_delta_ci_hi", 2), (f"{name}_delta_significant", None)]


# (field, rounding): decimals, "e" (3 significant digits, scientific) or None (as is). Every figure of the JSON
# except nested ones, rounded to what the measurement supports: no 17-digit floats.
CSV_FIELDS: list[tuple[str, int | str | None]] = [
    ("recipe", None), ("status", None), ("reason", None), ("complete", None), ("not_comparable", None),
    ("own_settings", None),
    ("utterances", None), ("expected_utterances", None), ("paired_utterances", None),
    *_accuracy_csv("wer"), *_accuracy_csv("cer"),
    ("eval_s", 3), ("speedup", 3), ("latency_p50_s", 3), ("latency_p90_s", 3), ("rtfx", 2), ("audio_s", 2),
    ("tokens", None), ("tokens_per_s", 1), ("load_s", 2), ("peak_ram_mb", 1), ("run_ram_mb", 1),
    ("peak_vram_mb", 1), ("cpu_percent", 1), ("size_mb", 1), ("compression", 3), ("encoder_rel_error", "e"),
    ("teacher_forced_agreement", 4), ("roofline_fixed_ms", 1), ("roofline_per_token_ms", 2),
    ("roofline_fixed_share_fp32", 3), ("roofline_fixed_share_int8", 3), ("roofline_decoder_gb_s", 2),
    ("roofline_headroom", 2), ("isa", None), ("roofline_precision", None), ("roofline_peak", None),
    ("roofline_fixed_share", 3), ("best_batch", None), ("rtfx_best", 2), ("throughput_gain", 3),
    ("packed_rtfx", 2), ("packed_gain", 3), ("packed_windows", None), ("packed_wer_delta", 2),
    ("packed_wer_delta_ci_lo", 2), ("packed_wer_delta_ci_hi", 2),
]


def _flat(row: SummaryRow) -> dict:
    """The row with each [lo, hi] interval split into ``<key>_lo`` / ``<key>_hi``."""
    out = dict(row)
    for key in ("wer_ci", "cer_ci", "wer_delta_ci", "cer_delta_ci", "packed_wer_delta_ci"):
        out[f"{key}_lo"], out[f"{key}_hi"] = row.get(key) or (None, None)
    for key, value in (row.get("roofline") or {}).items():
        out[f"roofline_{key}"] = value
    out["isa"] = isa_text(row)
    return out


def _csv_value(value, rounding: int | str | None):
    if value is None or rounding is None or isinstance(value, bool):
        return value
    return f"{value:.2e}" if rounding == "e" else round(float(value), rounding)


def csv_text(summary: Summary) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([name for name, _ in CSV_FIELDS])
    for row in summary["recipes"]:
        flat = _flat(row)
        writer.writerow([_csv_value(flat.get(name), rounding) for name, rounding in CSV_FIELDS])
    return buf.getvalue()


def _caption(summary: Summary, columns: list[Column]) -> str | None:
    """What the marks mean, and why rows are flagged or empty (the table has no room for reasons)."""
    lines = []
    if summary.get("synthetic"):
        lines.append("synthetic weights: WER/CER n/a")
    elif any(c.key.endswith("_delta") for c in columns):
        lines.append(f"Δ: percentage points vs {baseline_name(summary)} on the same utterances; * its 95 % CI "
                     "excludes 0")
    for row in summary["recipes"]:
        if row["status"] != "ok":
            lines.append(f"{row['recipe']}: {row['status']}" + (f": {row['reason']}" if row.get("reason") else ""))
        for mark, flag in zip(marks(row), flags(row)):
            why = {"not comparable": f": {row.get('not_comparable')}",
                   "own settings": f": {row.get('own_settings')}"}.get(flag, "")
            lines.append(f"{mark} {row['recipe']}: {flag}{why}")
    return "\n".join(lines) or None


def rich_table(summary: Summary, columns: str | None = None):
    """The terminal table: ``columns`` as --columns takes them (None: the default set, sized for 100 columns)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    chosen = select_columns(columns, bool(summary.get("synthetic")))
    # no outer edge and shared padding: each column costs 2 characters, so the default set fits 100 columns
    caption = _caption(summary, chosen)
    # Text, not markup: a reason such as "[errno 2] ..." must print as it is
    table = Table(title=Text(f"{summary['config']['model']} — {summary['config']['dataset']}"), box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, collapse_padding=True, caption=Text(caption) if caption else None,
                  caption_justify="left")
    table.add_column("recipe", no_wrap=True)
    for c in chosen:
        table.add_column(c.header, justify="right", no_wrap=True)  # a figure is never wrapped or cut
    for row in summary["recipes"]:
        name = Text(row["recipe"] + "".join(marks(row)))
        if row["status"] != "ok":  # the reason is in the caption: a long one here would squeeze every column
            status = [Text(row["status"], style="yellow")] + [Text("")] * (len(chosen) - 1)
            table.add_row(name, *status[:len(chosen)])
        else:
            table.add_row(name, *[Text(c.text(row) or NA) for c in chosen])
    return table
