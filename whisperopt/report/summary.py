"""Turn a results directory (run.json, per-recipe rows and status files) into one summary row per recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..bench.config import load_run
from ..bench.records import RecipeStatus, read_status
from ..bench.results import ROW_FIELDS, SLICE_FIELDS, read_rows, recipe_paths
from ..errors import WhisperoptError
from ..files import read_json
from ..metrics.bootstrap import LEVEL, RESAMPLES, SEED, paired_delta_ci, rate_ci
from ..metrics.isa import kernel_path
from ..metrics.roofline import WhisperCost, roofline, whisper_cost
from ..metrics.wer import ErrorCounts, corpus_rate
from ..recipes import Recipe, baseline_recipe, find_recipe
from .recommend import recommend
from .records import Summary, SummaryRow


def model_cost(model_dir: str | None) -> WhisperCost | None:
    """FLOPs and decoder weights of the benchmarked checkpoint, from its config.json (None if it is gone)."""
    try:
        return whisper_cost(json.loads((Path(model_dir) / "config.json").read_text())) if model_dir else None
    except (OSError, ValueError, KeyError):
        return None


def roofline_fields(rows: list[dict], cost: WhisperCost | None, peaks: dict | None, name: str,
                    precision: str | None = None) -> dict | None:
    """The recipe's share of this machine's limits (``metrics.roofline``), at its declared decoder weight precision
    and against the peak the precision its matrix products ran in can use (``precision``: its ISA path's)."""
    recipe = find_recipe(name)  # a named variant (R@window=auto) is judged as its recipe
    if cost is None or not peaks or recipe is None:
        return None
    return roofline(rows, cost, peaks, recipe.weight_bits, precision)


def isa_path_fields(status: RecipeStatus, name: str, cpu: dict | None, device: str) -> dict | None:
    """The precision and ISA path a recipe's matrix products ran on: what its engine reported
    (``run_info()["isa_path"]``), else its declared ``Recipe.compute_precision`` on the fastest path the benchmarked
    CPU's recorded flags give it (the engine picks its kernels from CPUID and does not say which)."""
    if status.get("isa_path"):
        return status["isa_path"]
    recipe = find_recipe(name)  # a named variant (R@window=auto) is judged as its recipe
    if device != "cpu" or recipe is None or not cpu or "isa" not in cpu:
        return None
    return kernel_path(recipe.compute_precision, "not reported by the engine: the fastest path for its "
                       "precision on this CPU's flags (its kernels dispatch on CPUID)", flags=set(cpu["isa"]))


def units(baseline: str) -> dict[str, str]:
    """One unit per quantity, recorded in summary.json so a reader never guesses fraction vs percent."""
    return {
        **dict.fromkeys(("wer", "cer", "wer_ci", "cer_ci"), "percent"),
        **dict.fromkeys(("wer_delta", "cer_delta", "wer_delta_ci", "cer_delta_ci"), "percentage points"),
        "teacher_forced_agreement": "fraction (0-1)", "*_s": "seconds", "*_mb": "MiB", "speedup": f"× {baseline}",
        "rtfx": "audio seconds per eval second",
    }


def fp32_bytes(model_dir: Path) -> int | None:
    """Size the checkpoint's parameters take in float32 (the denominator of 'compression')."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover
        return None
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with safe_open(str(f), framework="np") as sf:
            for key in sf.keys():
                total += int(np.prod(sf.get_slice(key).get_shape())) * 4
    return total


def error_counts(rows: list[dict], key: str) -> dict[str, ErrorCounts] | None:
    """Per-utterance counts ("words" or "chars") by utterance id; None unless every row has them (synthetic
    weights have none, and a rate over part of the rows would be a different corpus)."""
    if not rows or any(not r.get(key) for r in rows):
        return None
    return {r["id"]: ErrorCounts(**r[key]) for r in rows}


def percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def rate_fields(counts: dict[str, ErrorCounts] | None, name: str) -> dict:
    """``wer`` and ``wer_ci`` [lo, hi] (or cer), in percent; None where there is no rate."""
    rate = corpus_rate(list(counts.values())) if counts else None
    if rate is None:
        return {name: None, f"{name}_ci": None}
    lo, hi = rate_ci(list(counts.values()))
    return {name: percent(rate), f"{name}_ci": [percent(lo), percent(hi)]}


def delta_fields(base: dict[str, ErrorCounts] | None, mine: dict[str, ErrorCounts] | None, name: str) -> dict:
    """Paired difference against the baseline on the utterances both have, in percentage points."""
    empty = {f"{name}_delta": None, f"{name}_delta_ci": None, f"{name}_delta_significant": None}
    if not base or not mine:
        return empty
    common = [i for i in base if i in mine]
    if not common or sum(base[i].reference_length for i in common) == 0:
        return empty
    d = paired_delta_ci([base[i] for i in common], [mine[i] for i in common])
    return {f"{name}_delta": percent(d["delta"]), f"{name}_delta_ci": [percent(d["lo"]), percent(d["hi"])],
            f"{name}_delta_significant": d["significant"]}


def resources(slices: list[dict]) -> dict:
    """Combine the resource slices of every process that measured utterances (several after a resume or on Ray)."""
    if not slices:
        return {}

    def peak(key):
        values = [s[key] for s in slices if s.get(key) is not None]
        return max(values) if values else None

    wall = sum(s["wall_s"] for s in slices)
    return {
        "load_s": slices[-1]["load_s"],
        "peak_ram_mb": peak("peak_ram_mb"),
        "run_ram_mb": peak("run_ram_mb"),
        "peak_vram_mb": peak("peak_vram_mb"),
        "cpu_percent": 100.0 * sum(s["cpu_s"] for s in slices) / wall if wall > 0 else None,
        "processes": len(slices),
    }


ACCURACY_KEYS = ("wer", "wer_ci", "wer_delta", "wer_delta_ci", "wer_delta_significant",
                 "cer", "cer_ci", "cer_delta", "cer_delta_ci", "cer_delta_significant", "paired_utterances")


def wanted_rows(rows: list[dict], wanted_ids: list[str]) -> list[dict]:
    """The rows of the run's utterances, in dataset order (a rows file may hold more after a --limit change)."""
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i in wanted_ids if i in by_id]


def recipe_summary(status: RecipeStatus, rows: list[dict], wanted_ids: list[str],
                   slices: list[dict] | None = None) -> SummaryRow:
    """A recipe's row from its status and rows; the accuracy, speed-up and hardware figures are ``summarise``'s."""
    out = SummaryRow(recipe=status["recipe"], status=status["status"])
    if status["status"] != "ok":
        out["reason"] = status.get("reason") or status.get("error")
        return out
    rows = wanted_rows(rows, wanted_ids)
    lat = np.array([r["latency_s"] / 1.0 for r in rows])
    # a batch's wall time is shared by its items: count it once per batch
    eval_s = float(sum(r["latency_s"] / r.get("batch", 1) for r in rows))
    audio_s = float(sum(r["duration_s"] for r in rows))
    out.update(
        utterances=len(rows),
        expected_utterances=len(wanted_ids),
        complete=len(rows) == len(wanted_ids),
        **dict.fromkeys(ACCURACY_KEYS),  # filled by add_accuracy, which needs the baseline and the weights' kind
        eval_s=eval_s,
        audio_s=audio_s,
        latency_p50_s=float(np.percentile(lat, 50)) if len(lat) else None,
        latency_p90_s=float(np.percentile(lat, 90)) if len(lat) else None,
        rtfx=audio_s / eval_s if eval_s > 0 else None,
        tokens=int(sum(r["tokens"] for r in rows)),
        tokens_per_s=sum(r["tokens"] for r in rows) / eval_s if eval_s > 0 else None,
        load_s=None, peak_ram_mb=None, run_ram_mb=None, peak_vram_mb=None, cpu_percent=None,
        size_mb=status["size_bytes"] / 1024 / 1024 if status.get("size_bytes") else None,
        encoder_rel_error=status.get("encoder_rel_error"),
        teacher_forced_agreement=status.get("teacher_forced_agreement"),
        fidelity_note=status.get("fidelity_note"),
        fidelity_method=status.get("fidelity_method"),
        not_comparable=status.get("not_comparable"),
        own_settings=status.get("own_settings"),
        decode_settings=status.get("decode_settings"),
        isa_path=status.get("isa_path"),
        engine=status.get("engine"),
        options=status.get("options"),
        manifest=status.get("manifest"),
    )
    out.update(resources(slices or []))
    out.update(component_fields(status))
    out.update(throughput_fields(status, rows, out["rtfx"], out["run_ram_mb"]))
    out.update(packed_fields(status, out["rtfx"]))
    return out


def throughput_fields(status: RecipeStatus, rows: list[dict], rtfx: float | None, run_ram_mb: float | None) -> dict:
    """Throughput mode (``--throughput-batches``): RTFx per batch size, the measured pass's included, the best batch
    and its gain over batch 1 (over the measured pass's batch size when batch 1 was not run)."""
    extra = status.get("throughput") or []
    if not (extra or status.get("packed")) or not rows:  # a packed pass alone: the measured pass's point
        return {}
    points = {max(r.get("batch", 1) for r in rows): {"rtfx": rtfx, "run_ram_mb": run_ram_mb, "same_text": 1.0}}
    for t in extra:
        points.setdefault(t["batch"], {"rtfx": t["rtfx"], "run_ram_mb": t["run_ram_mb"], "same_text": t["same_text"]})
    table = [{"batch": b, **v} for b, v in sorted(points.items()) if v["rtfx"]]
    if not table:
        return {}
    best = max(table, key=lambda p: p["rtfx"])
    ref = points.get(1) or table[0]
    return {"throughput": table, "best_batch": best["batch"], "rtfx_best": best["rtfx"],
            "throughput_gain": best["rtfx"] / ref["rtfx"] if ref["rtfx"] else None}


def packed_fields(status: RecipeStatus, rtfx: float | None) -> dict:
    """The packed pass (``--pack``): its record as the worker wrote it, plus flat figures for the CSV: RTFx, its gain
    over the measured pass (same utterances and batch size, unpacked), windows, and the paired ΔWER against the
    measured pass in points with its interval (None on synthetic weights or where the engine cannot pack)."""
    packed = status.get("packed")
    if not packed:
        return {}
    gain = packed["rtfx"] / rtfx if packed.get("rtfx") and rtfx else None
    return {"packed": packed, "packed_rtfx": packed.get("rtfx"), "packed_gain": gain,
            "packed_windows": packed.get("windows"), "packed_wer_delta": packed.get("wer_delta"),
            "packed_wer_delta_ci": packed.get("wer_delta_ci")}


COMPONENT_TIMES = ("encoder_ms_median", "decoder_ms_median", "decoder_first_ms_median", "decoder_step_ms_median")


def component_fields(status: RecipeStatus) -> dict:
    """Per-component (encoder / decoder) weight bytes and median per-call times, where an engine records them
    (``components`` in the manifest, ``*_ms_median`` from its runtime)."""
    out = {}
    comps = (status.get("manifest") or {}).get("components")
    if comps:
        out["components"] = comps
    times = {k: status[k] for k in COMPONENT_TIMES if status.get(k) is not None}
    if times:
        out["component_ms"] = times
    return out


def component_baseline(recipe: Recipe | None, names: set[str]) -> str | None:
    """The recipe among ``names`` that ``recipe``'s per-component times are compared with: its declared
    ``Recipe.component_baseline`` (the fp32 of the same engine and decode loop) if it ran, else, for a recipe that
    runs its base's artifact unchanged (``shares_base_weights``), the base's; None for a recipe not in the registry."""
    while recipe is not None:
        if recipe.component_baseline in names:
            return recipe.component_baseline
        recipe = recipe.base_recipe if recipe.shares_base_weights else None
    return None


def add_component_speedups(rows: list[SummaryRow]) -> None:
    """Median per-call encoder/decoder speed-up and whole-run speed-up against the same loop's fp32."""
    ok = {r["recipe"]: r for r in rows if r["status"] == "ok"}
    for r in ok.values():
        base = ok.get(component_baseline(find_recipe(r["recipe"]), set(ok)) or "")
        if base is None:
            continue
        speedups = {}
        for comp in ("encoder", "decoder"):
            mine, ref = (r.get("component_ms") or {}).get(f"{comp}_ms_median"), \
                (base.get("component_ms") or {}).get(f"{comp}_ms_median")
            if mine and ref:
                speedups[comp] = ref / mine
        if base.get("eval_s") and r.get("eval_s"):
            speedups["whole"] = base["eval_s"] / r["eval_s"]
        r["component_speedup"] = {"baseline": base["recipe"], **speedups}


def accuracy_fields(counts: dict, base_counts: dict | None) -> dict:
    """WER/CER with their intervals, and their paired deltas against the baseline, all in percent."""
    out = {**rate_fields(counts["words"], "wer"), **rate_fields(counts["chars"], "cer")}
    out.update(delta_fields(base_counts and base_counts["words"], counts["words"], "wer"))
    out.update(delta_fields(base_counts and base_counts["chars"], counts["chars"], "cer"))
    # a delta exists only where both sides have word counts
    out["paired_utterances"] = (len(set(base_counts["words"]) & set(counts["words"]))
                                if out["wer_delta"] is not None else None)
    return out


def add_accuracy(rows_out: list[SummaryRow], counts: dict[str, dict], synthetic: bool, baseline: str) -> None:
    """Fill the accuracy keys of every ok row. Synthetic weights decode noise: accuracy is not a measurement, so
    every figure stays None (n/a), never a number."""
    base_counts = counts.get(baseline)
    for r in rows_out:
        if r["status"] == "ok" and not synthetic:
            r.update(accuracy_fields(counts[r["recipe"]], base_counts))


def _cpu_counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("cpu_model") or "?"] = counts.get(r.get("cpu_model") or "?", 0) + 1
    return counts


def speedup_within_hardware(base_rows: list[dict], rows: list[dict], baseline: str) -> tuple[float | None, str | None]:
    """Eval-time speed-up against the baseline, computed within one CPU model: when every row of both ran on one
    CPU model (or the rows predate the ``cpu_model`` field), the whole runs' ratio; otherwise the ratio over the
    utterances whose two rows ran on the same CPU model, with a note saying so (None when there are none)."""
    def eval_s(rs):
        return sum(r["latency_s"] / r.get("batch", 1) for r in rs)

    models = set(_cpu_counts(base_rows)) | set(_cpu_counts(rows))
    if len(models) <= 1:
        return (eval_s(base_rows) / eval_s(rows) if eval_s(rows) else None), None
    base_by_id = {r["id"]: r for r in base_rows}
    pairs = [(base_by_id[r["id"]], r) for r in rows
             if r["id"] in base_by_id and base_by_id[r["id"]].get("cpu_model") == r.get("cpu_model")]
    where = "; ".join(f"{m}: {n}" for m, n in sorted(_cpu_counts(rows).items()))
    if not pairs:
        return None, (f"rows ran on other CPU models than {baseline}'s ({where} utterances); no speed-up across "
                      "hardware")
    mine = eval_s([p[1] for p in pairs])
    return (eval_s([p[0] for p in pairs]) / mine if mine else None), \
        (f"rows ran on more than one CPU model ({where} utterances): speed-up over the {len(pairs)} of {len(rows)} "
         f"utterances measured on the same CPU model as {baseline}'s")


def summarise(out_dir: Path, wer_budget: float = 1.0, min_agreement: float = 0.95,
              rank_by: str = "eval_s") -> Summary:
    """Everything the report shows, as plain data, including the recommendation for these criteria
    (``wer_budget`` in WER percentage points; see ``recommend``)."""
    from ..data import load_dataset

    out_dir = Path(out_dir)
    cfg = load_run(out_dir)
    env_file = out_dir / "environment.json"
    env = read_json(env_file, "environment record", "re-run the bench command to rewrite it (measured rows are "
                    "kept)") if env_file.exists() else {}
    if not isinstance(env, dict):
        raise WhisperoptError(f"environment record {env_file} is damaged (not an object); re-run the bench command to "
                              "rewrite it (measured rows are kept)")
    synthetic = bool(env.get("model", {}).get("synthetic"))
    cost = model_cost(env.get("model", {}).get("path"))
    try:
        wanted = [u.id for u in load_dataset(cfg.dataset).limit(cfg.limit).utterances]
    except WhisperoptError as exc:  # moved or deleted since the bench, or run.json edited
        raise WhisperoptError(f"{out_dir / 'run.json'}: its dataset cannot be read here ({exc})") from None
    rows_out: list[SummaryRow] = []
    counts, measured = {}, {}
    for name in cfg.recipes:
        paths = recipe_paths(out_dir, name)  # run.json's names are checked; every path stays in out_dir
        status = read_status(paths["status"], expect=name)
        if not status:
            rows_out.append(SummaryRow(recipe=name, status="not run"))
            continue
        rows = read_rows(paths["rows"], fields=ROW_FIELDS)
        rows_out.append(recipe_summary(status, rows, wanted, read_rows(paths["slices"], key=None,
                                                                      fields=SLICE_FIELDS)))
        mine = measured[name] = wanted_rows(rows, wanted)
        if rows_out[-1]["status"] == "ok":
            isa_path = rows_out[-1]["isa_path"] = isa_path_fields(status, name, env.get("cpu"), cfg.device)
            rows_out[-1]["roofline"] = roofline_fields(mine, cost, env.get("peaks"), name,
                                                       (isa_path or {}).get("precision"))
        counts[name] = {"words": error_counts(mine, "words"), "chars": error_counts(mine, "chars")}
    baseline = baseline_recipe().name
    add_accuracy(rows_out, counts, synthetic, baseline)
    model_dir = env.get("model", {}).get("path")
    ref_bytes = fp32_bytes(Path(model_dir)) if model_dir else None
    base = next((r for r in rows_out if r["recipe"] == baseline and r["status"] == "ok"), None)
    for r in rows_out:
        if r["status"] != "ok":
            continue
        # eval times compare only over the same utterances: none for a recipe (or baseline) measured on fewer
        same_set = base and base.get("complete") and r.get("complete")
        r["speedup"], r["hardware_note"] = speedup_within_hardware(measured[baseline], measured[r["recipe"]],
                                                                   baseline) if same_set and r["eval_s"] else (None, None)
        r["compression"] = ref_bytes / 1024 / 1024 / r["size_mb"] if ref_bytes and r.get("size_mb") else None
    add_component_speedups(rows_out)
    summary = Summary(config=cfg.to_dict(), environment=env, synthetic=synthetic, baseline=baseline,
                      units=units(baseline), bootstrap={"resamples": RESAMPLES, "level": LEVEL, "seed": SEED,
                                                        "unit": "utterance", "interval": "percentile"},
                      recipes=rows_out)
    summary["recommendation"] = recommend(summary, wer_budget, min_agreement, rank_by)
    return summary
