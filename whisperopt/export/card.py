"""The model card of an exported directory: hub metadata (huggingface_hub's ModelCardData) and a body that states
what the optimisation cost, with the numbers the benchmark measured (``whisperopt_export.json``), never others.

Metadata: licence (MIT for OpenAI's and distil-whisper's checkpoints; left out where whisperopt cannot tell),
``library_name``, tags (whisper, whisperopt, the engine, the recipe, the weight precision), ``base_model`` with
``base_model_relation: quantized`` for sub-16-bit weights, ``pipeline_tag`` and, for trained weights measured on a
LibriSpeech split, a model-index with WER and CER (the dataset name says how many utterances). Synthetic weights get
no eval results: their WER measures nothing.
"""

from __future__ import annotations

import json

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..models.export_record import CARD_DIGEST_LINE, ExportRecord
from ..recipes import get_recipe
from ..recipes.usage import PREAMBLE, native_usage
from ..report.columns import BY_KEY, NA
from ..report.records import SummaryRow

# summary columns shown in the card's table, in the report's own formatting
CARD_COLUMNS = ("wer", "wer_ci", "wer_delta", "wer_delta_ci", "cer", "eval_s", "speedup", "latency_p50_s",
                "latency_p90_s", "rtfx", "load_s", "peak_ram_mb", "size_mb", "compression", "encoder_rel_error",
                "teacher_forced_agreement")
# LibriSpeech split (whisperopt's dataset name) -> the hub dataset's config and split
LIBRISPEECH = {"test-clean": ("clean", "test"), "test-other": ("other", "test"),
               "dev-clean": ("clean", "validation"), "dev-other": ("other", "validation")}


def precision(record: ExportRecord) -> str:
    """The weights' number format as a tag: fp32, fp16/bf16, int8, int4, or N-bit."""
    bits, name = record.get("weight_bits") or 32, record["recipe"]
    if bits >= 32:
        return "fp32"
    if bits == 16:
        return "bf16" if "bf16" in name else "fp16"
    return f"int{bits}" if bits in (8, 4) else f"{bits}-bit"


def model_name(record: ExportRecord) -> str:
    src = record["source_model"]
    base = (src.get("hub_id") or src.get("spec") or "whisper").rstrip("/").split("/")[-1].replace(":", "-")
    return f"{base}-{record['recipe']}"


def _librispeech(record: ExportRecord) -> tuple[str, str, str] | None:
    """(split, config, hub split) when the benchmark ran on a LibriSpeech split."""
    ds = record["benchmark"]["dataset"]
    for name in (str(ds.get("spec") or "").removeprefix("librispeech:"), str(ds.get("name") or "")
                 .removeprefix("librispeech-")):
        if name in LIBRISPEECH:
            return (name, *LIBRISPEECH[name])
    return None


def _eval_results(record: ExportRecord) -> list[EvalResult] | None:
    row, ds = record["benchmark"]["row"], record["benchmark"]["dataset"]
    split = _librispeech(record)
    if record["source_model"]["synthetic"] or row.get("wer") is None or split is None:
        return None
    name, config, hub_split = split
    n = row.get("utterances")
    whole = ds.get("limit") is None
    dataset_name = f"LibriSpeech {name} ({'all ' if whole else 'first '}{n} utterances)"
    common = dict(task_type="automatic-speech-recognition", task_name="Automatic Speech Recognition",
                  dataset_type="openslr/librispeech_asr", dataset_name=dataset_name, dataset_config=config,
                  dataset_split=hub_split)
    out = [EvalResult(metric_type="wer", metric_name="WER (%)", metric_value=round(row["wer"], 2), **common)]
    if row.get("cer") is not None:
        out.append(EvalResult(metric_type="cer", metric_name="CER (%)", metric_value=round(row["cer"], 2), **common))
    return out


def card_data(record: ExportRecord, name: str) -> ModelCardData:
    src = record["source_model"]
    quantised = (record.get("weight_bits") or 32) < 16
    tags = list(dict.fromkeys(["whisper", "whisperopt", record["engine"], record["recipe"], precision(record)]
                              + (["synthetic-weights"] if src["synthetic"] else [])))
    extra = {"base_model_relation": "quantized"} if quantised and src.get("hub_id") else {}
    return ModelCardData(
        license=src.get("license"),
        library_name="whisperopt",
        tags=tags,
        base_model=src.get("hub_id"),
        pipeline_tag="automatic-speech-recognition",
        language=["en"] if not src.get("multilingual") else list(src.get("languages") or []) or None,
        model_name=name,
        eval_results=_eval_results(record),
        **extra,
    )


def _cell(row: SummaryRow | None, key: str) -> str:
    if row is None:
        return ""
    return BY_KEY[key].text(row) or NA


def _table(record: ExportRecord) -> list[str]:
    bench = record["benchmark"]
    rows = [(f"**{record['recipe']}** (this model)", bench["row"])]
    if bench.get("baseline_row"):
        rows.append((f"{bench['baseline_recipe']} (baseline)", bench["baseline_row"]))
    header = ["recipe"] + [BY_KEY[k].header.replace("\n", " ") for k in CARD_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(CARD_COLUMNS)]
    lines += ["| " + " | ".join([label] + [_cell(row, k) for k in CARD_COLUMNS]) + " |" for label, row in rows]
    return lines


def _accuracy_lines(record: ExportRecord) -> list[str]:
    bench, row = record["benchmark"], record["benchmark"]["row"]
    base, boot = bench["baseline_recipe"], bench.get("bootstrap") or {}
    if record["source_model"]["synthetic"]:
        return ["- **Synthetic weights** (random, seeded): WER and CER measure nothing and are not given; each "
                "utterance decoded exactly as many tokens as its reference transcript, so speed and memory equal a "
                "real run. Fidelity to the fp32 model is the accuracy figure here."]
    lines = []
    if row.get("not_comparable"):
        lines.append(f"- **Not comparable** with {base}: {row['not_comparable']}.")
    elif row.get("own_settings"):
        lines.append(f"- **Own settings**: {row['own_settings']} (WER comparable, time not like-for-like).")
    if row.get("wer") is not None:
        lo, hi = row["wer_ci"]
        lines.append(f"- **WER {row['wer']:.2f} %** (95 % CI {lo:.2f}-{hi:.2f}; CER {row['cer']:.2f} %) on "
                     f"{row['utterances']} utterances, corpus rate after Whisper's English text normaliser; "
                     f"percentile bootstrap over utterances ({boot.get('resamples', '?')} resamples, seed "
                     f"{boot.get('seed', '?')}).")
    if row.get("wer_delta") is not None and bench.get("baseline_row") is not None:
        lo, hi = row["wer_delta_ci"]
        sig = "significant: the interval excludes 0" if row.get("wer_delta_significant") else \
            "not significant: the interval includes 0"
        lines.append(f"- **ΔWER {row['wer_delta']:+.2f} percentage points** against {base} "
                     f"({bench['baseline_row']['wer']:.2f} %) on the {row.get('paired_utterances')} utterances both "
                     f"transcribed, paired bootstrap 95 % CI [{lo:+.2f}, {hi:+.2f}] ({sig}).")
    elif record["recipe"] == base:
        lines.append(f"- {base} is the baseline: the other recipes' ΔWER and speed-up are against it.")
    else:
        lines.append(f"- No {base} row in this run: no ΔWER or speed-up.")
    return lines


def _speed_lines(record: ExportRecord) -> list[str]:
    row, base = record["benchmark"]["row"], record["benchmark"]["baseline_recipe"]
    lines = []
    if row.get("speedup") is not None and record["recipe"] != base:
        lines.append(f"- **{row['speedup']:.2f}× {base}'s speed**: eval {row['eval_s']:.2f} s (sum of per-utterance "
                     "feature extraction + encoder + decoding, after a warm-up) for "
                     f"{row['audio_s']:.1f} s of audio, RTFx {row['rtfx']:.1f}; latency p50 "
                     f"{1000 * row['latency_p50_s']:.0f} ms, p90 {1000 * row['latency_p90_s']:.0f} ms per utterance.")
    else:
        lines.append(f"- eval {row['eval_s']:.2f} s for {row['audio_s']:.1f} s of audio, RTFx {row['rtfx']:.1f}; "
                     f"latency p50 {1000 * row['latency_p50_s']:.0f} ms, p90 {1000 * row['latency_p90_s']:.0f} ms.")
    mem = f"- peak RAM {row['peak_ram_mb']:.0f} MB (the recipe's own process, load included)" \
        if row.get("peak_ram_mb") is not None else "- peak RAM n/a"
    if row.get("size_mb") is not None:
        mem += f"; weights on disk {row['size_mb']:.1f} MB"
        if row.get("compression") is not None:
            mem += f", compression {row['compression']:.2f}× (fp32 parameter bytes / weight bytes)"
    lines.append(mem + ".")
    if row.get("teacher_forced_agreement") is not None:
        enc = f", encoder relative error {row['encoder_rel_error']:.2e}" if row.get("encoder_rel_error") is not None \
            else ""
        lines.append(f"- Fidelity to fp32 on {record['benchmark'].get('fidelity_utterances')} utterances: "
                     f"teacher-forced top-1 agreement {100 * row['teacher_forced_agreement']:.2f} %{enc}.")
    rec = record["benchmark"].get("recommendation") or {}
    if record["benchmark"].get("recommended"):
        lines.append(f"- **Recommended** by whisperopt in this run: {rec.get('criterion')}.")
    elif rec.get("recipe"):
        why = (rec.get("excluded") or {}).get(record["recipe"])
        lines.append(f"- whisperopt recommended {rec['recipe']} in this run ({rec.get('criterion')})"
                     + (f"; this recipe was not eligible: {why}." if why else "."))
    return lines


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in d.items())


def _usage(record: ExportRecord, dirname: str, repo_id: str | None) -> list[str]:
    engine_settings = record["benchmark"]["row"].get("decode_settings") or {}
    bench_lang = (record["decode"].get("bench") or {}).get("language")
    multilingual = record["source_model"].get("multilingual")
    language = bench_lang if multilingual else None
    fetch = []
    if repo_id:
        fetch = ["```bash", f"hf download {repo_id} --local-dir {dirname}   # or huggingface_hub.snapshot_download",
                 "```", ""]
    lines = ["## How to use", "", *fetch, "With whisperopt (the recipe is read from `whisperopt_export.json`; no cache, "
             "no rebuild):", "", "```bash",
             f"whisperopt transcribe audio.flac --model {dirname} --language {bench_lang or 'auto'} --beam-size 1",
             f"whisperopt bench --model {dirname} --limit 100   # re-measure this recipe here (absolute WER; no fp32 "
             "baseline in the export)", "```", "", "```python",
             "from whisperopt.transcribe import Transcriber", "",
             f'model = Transcriber.load("{dirname}")  # {record["recipe"]}',
             'result = model.transcribe("audio.flac", beam_size=1)', "print(result.text)", "```", ""]
    snippet = native_usage(get_recipe(record["recipe"]), _build_fields(record), record["artifact"], language)
    if snippet:
        lines += [f"With the engine's own API ({record['engine']}), no whisperopt needed, decoding greedily as the "
                  "benchmark did:", "", "```python",
                  PREAMBLE.format(root=dirname, artifact=record["artifact"]).rstrip("\n"), "", snippet.rstrip("\n"),
                  "```", ""]
        if "shared" in str(engine_settings.get("front_end") or ""):
            lines += ["(whisperopt fed this engine Whisper's reference log-mel front end, audio zero-padded to 30 s; "
                      "the engine's own front end can change a few transcripts.)", ""]
    return lines


def _build_fields(record: ExportRecord) -> dict:
    """What the build recorded about the artifact (quantisation, file names, converter), bookkeeping left out."""
    return (record.get("build") or {}).get("fields") or {}


def body(record: ExportRecord, dirname: str, repo_id: str | None) -> str:
    src, bench, row = record["source_model"], record["benchmark"], record["benchmark"]["row"]
    env = record.get("environment") or {}
    ds = bench["dataset"]
    cpu = env.get("cpu") or {}
    origin = src.get("hub_id") or src.get("spec")
    lines = [f"# {model_name(record)}", "",
             f"[{origin}]({'https://huggingface.co/' + src['hub_id'] if src.get('hub_id') else origin}) "
             f"optimised by whisperopt recipe **{record['recipe']}** ({record['engine']}): "
             f"{record['description']}.", "",
             f"Source weights: `--model {src.get('spec')}`, resolved as: {src.get('source') or src.get('path')} "
             f"(fingerprint {src.get('fingerprint')})."
             + (" **Random weights** (`synthetic`): for speed and memory measurements only." if src["synthetic"]
                else ""), "",
             "## What it costs (measured)", "",
             f"`whisperopt bench` on {row.get('utterances')} utterances of {ds.get('name') or ds.get('spec')} "
             f"({(ds.get('total_s') or 0) / 60:.1f} min of audio), {env.get('device', 'cpu')}, "
             f"{env.get('threads', '?')} threads, {cpu.get('model', '?')}; each recipe in its own process, under "
             "identical decoding settings. Units: WER/CER in %, ΔWER in percentage points (`*`: its 95 % CI "
             "excludes 0), times in s or ms, memory and size in MB.", "",
             *_table(record), "",
             *_accuracy_lines(record), *_speed_lines(record), "",
             "Per-utterance evidence (hypothesis, reference, error counts) is in `benchmark/`, with the run's "
             "summary.json: the figures above can be recomputed without whisperopt.", "",
             "## Decode settings", "",
             f"- benchmark: {_kv(record['decode'].get('bench') or {})}; greedy, temperature 0, no timestamps, "
             "language and task fixed",
             ]
    if record["decode"].get("engine"):
        lines.append(f"- {record['engine']} ran with: {_kv(record['decode']['engine'])}")
    validation = (record.get("build") or {}).get("validation") or {}
    build = _build_fields(record)
    lines += ["", "## Recipe", "",
              f"- recipe {record['recipe']}, engine {record['engine']}, weights {precision(record)}, options "
              f"{_kv(record.get('options') or {}) or 'defaults'}"]
    if build:
        lines.append(f"- build: {_kv(build)}")
    if validation:
        lines.append(f"- build check against fp32 (whisperopt refuses artifacts below the floor): {_kv(validation)}")
    versions = env.get("versions") or {}
    built_with = (record.get("versions") or {}).get("built_with") or {}
    lines += ["", "## Hardware and software", "",
              f"- CPU: {cpu.get('model', '?')} [{' '.join(cpu.get('isa') or [])}], {cpu.get('logical_cores', '?')} "
              f"logical cores; GPU: {', '.join(g.get('name', '?') for g in env.get('gpus') or []) or 'none'}; "
              f"OS: {env.get('os', '?')}",
              f"- built with: {_kv(built_with)}",
              f"- benchmarked with: {_kv({k: versions[k] for k in sorted(versions)})}",
              f"- exported by whisperopt {(record.get('versions') or {}).get('whisperopt')} at "
              f"{record.get('exported_at')}", ""]
    lines += _usage(record, dirname, repo_id)
    files = record.get("files") or {}
    shown = {k: v for k, v in files.items() if not k.startswith("benchmark/")}
    lines += ["## Files", "", "| file | MB | sha256 |", "|---|---:|---|"]
    lines += [f"| {k} | {v['bytes'] / 1e6:.2f} | `{v['sha256'][:16]}…` |" for k, v in shown.items()]
    lines += ["", "Full digests of every file are in `whisperopt_export.json`; `artifact/manifest.json` is the "
              "manifest the artifact was built with. whisperopt checks this table's own digest and every file's size "
              "whenever it loads the folder, and every file's sha256 with `--verify`:", "",
              CARD_DIGEST_LINE.format(record.get("files_sha256")), ""]
    if src.get("license"):
        lines += ["## License", "", f"The weights are {origin}'s, under its {src['license'].upper()} licence.", ""]
    else:
        lines += ["## License", "", "Not recorded: the licence of the source checkpoint applies.", ""]
    return "\n".join(lines)


def model_card(record: ExportRecord, dirname: str, repo_id: str | None = None) -> ModelCard:
    """The card for ``record`` (whisperopt_export.json), its examples naming ``dirname`` (the exported directory)
    and, when given, the hub repository ``repo_id``."""
    name = model_name(record)
    data = card_data(record, name)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body(record, dirname, repo_id)}")
