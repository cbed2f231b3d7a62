"""Render a benchmark summary as Markdown, CSV, JSON and a rich terminal table. Reads data, measures nothing."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

# (key, header, format)
COLUMNS = [
    ("wer", "WER %", lambda v: f"{100 * v:.2f}"),
    ("cer", "CER %", lambda v: f"{100 * v:.2f}"),
    ("eval_s", "eval s", lambda v: f"{v:.1f}"),
    ("speedup", "speed-up ×", lambda v: f"{v:.2f}"),
    ("latency_p50_s", "p50 ms", lambda v: f"{1000 * v:.0f}"),
    ("latency_p90_s", "p90 ms", lambda v: f"{1000 * v:.0f}"),
    ("rtfx", "RTFx", lambda v: f"{v:.1f}"),
    ("load_s", "load s", lambda v: f"{v:.2f}"),
    ("peak_ram_mb", "peak RAM MB", lambda v: f"{v:.0f}"),
    ("peak_vram_mb", "peak VRAM MB", lambda v: f"{v:.0f}"),
    ("cpu_percent", "CPU %", lambda v: f"{v:.0f}"),
    ("size_mb", "size MB", lambda v: f"{v:.1f}"),
    ("compression", "compression ×", lambda v: f"{v:.2f}"),
    ("encoder_rel_error", "enc. rel. err", lambda v: f"{v:.2e}"),
    ("teacher_forced_agreement", "TF top-1 %", lambda v: f"{100 * v:.2f}"),
]
NA = "n/a"


def cells(row: dict) -> list[str]:
    if row["status"] != "ok":
        reason = row.get("reason") or ""
        return [f"{row['status']}: {reason}"] + [""] * (len(COLUMNS) - 1)
    return [fmt(row[key]) if row.get(key) is not None else NA for key, _, fmt in COLUMNS]


def markdown(summary: dict) -> str:
    lines = []
    cfg, env = summary["config"], summary.get("environment", {})
    cpu = env.get("cpu", {})
    ds = env.get("dataset", {})
    lines.append(f"# whisperopt bench: {cfg['model']} on {ds.get('name', cfg['dataset'])}")
    lines.append("")
    lines.append(f"- utterances: {ds.get('utterances', '?')} ({ds.get('total_s', 0) / 60:.1f} min of audio); "
                 f"decoding: beam {cfg['decode']['beam_size']}, language {cfg['decode']['language']}, "
                 f"task {cfg['decode']['task']}, batch {cfg['decode']['batch_size']}, no timestamps")
    lines.append(f"- device: {cfg['device']}; threads: {cfg['threads']}; OS: {env.get('os', '?')}; CPU: {cpu.get('model', '?')} "
                 f"[{' '.join(cpu.get('isa', []))}]" + (f"; GPU: {env['gpus'][0]['name']}" if env.get("gpus") else ""))
    versions = env.get("versions", {})
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if summary.get("synthetic"):
        lines.append("- **synthetic checkpoint** (random weights): WER/CER are n/a; each utterance decodes exactly as "
                     "many tokens as its reference transcript (+ end-of-text), so time and memory equal a real run")
    lines.append("- speed-up and compression are relative to torch-fp32 (compression: fp32 parameter bytes / "
                 "weight bytes on disk); fidelity is against torch-fp32 on CPU, "
                 f"{cfg.get('fidelity_utterances')} utterances")
    lines.append("")
    header = ["recipe"] + [h for _, h, _ in COLUMNS]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|")
    for row in summary["recipes"]:
        name = row["recipe"] + (" (not comparable)" if row.get("not_comparable") else "")
        lines.append("| " + " | ".join([name] + cells(row)) + " |")
    notes = []
    for r in summary["recipes"]:
        if r.get("not_comparable"):
            notes.append(f"- {r['recipe']}: **not comparable**: {r['not_comparable']}")
        for key in ("fidelity_note", "fidelity_method"):
            if r.get(key):
                notes.append(f"- {r['recipe']}: fidelity: {r[key]}")
        if r.get("decode_settings"):
            notes.append(f"- {r['recipe']}: ran with " + ", ".join(f"{k}={v}" for k, v in r["decode_settings"].items()))
        if r.get("components") or r.get("component_speedup"):
            notes.append(f"- {r['recipe']}: per component: {component_text(r)}")
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


def component_text(r: dict) -> str:
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


def csv_text(summary: dict) -> str:
    buf = io.StringIO()
    keys = ["recipe", "status", "reason"] + [k for k, _, _ in COLUMNS] + ["utterances", "audio_s", "tokens",
                                                                          "tokens_per_s", "run_ram_mb"]
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for row in summary["recipes"]:
        writer.writerow({k: row.get(k) for k in keys})
    return buf.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_reports(summary: dict, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"md": out_dir / "summary.md", "csv": out_dir / "summary.csv", "json": out_dir / "summary.json"}
    _atomic_write(paths["md"], markdown(summary))
    _atomic_write(paths["csv"], csv_text(summary))
    _atomic_write(paths["json"], json.dumps(summary, indent=2, default=str))
    return paths


def rich_table(summary: dict):
    from rich.table import Table

    table = Table(title=f"{summary['config']['model']} — {summary['config']['dataset']}", show_lines=False)
    table.add_column("recipe", no_wrap=True)
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in summary["recipes"]:
        c = cells(row)
        if row["status"] != "ok":
            table.add_row(row["recipe"], f"[yellow]{c[0]}[/yellow]", *[""] * (len(COLUMNS) - 1))
        else:
            table.add_row(row["recipe"], *c)
    return table
