"""Choose the adaptive window's floor and margin on tuning data (never test-clean): WER and time of one recipe at
the full 30-s window and at each (floor, margin), on the same utterances, greedy, batch 1.

    python benchmarks/window_sweep.py --model tiny.en --recipe torch-fp32 \
        --dataset librispeech:dev-clean,../shared/data/librispeech/LibriSpeech/train-clean-5 --limit 40

Each dataset (comma-separated) gives its first --limit utterances that hold sound: 30 of the 40 dev-clean files in
../shared are digital silence (all samples 0), so dev-clean alone leaves 10 utterances; train-clean-5 (not a test
split) adds real ones.

Prints one line per setting (WER %, errors, utterances whose transcript changed, eval s) and writes the table as
JSON to --out. README "Adaptive encoder window" quotes the figures the defaults in constants.py were chosen from.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from whisperopt.data import features, load_dataset
from whisperopt.metrics.wer import corpus_rate, utterance_errors
from whisperopt.models.resolve import resolve_model
from whisperopt.recipes import get_recipe
from whisperopt.recipes.artifacts import build_artifact
from whisperopt.recipes.base import DecodeOptions

SETTINGS = [("30", None), ("1", 0.5), ("1", 1.0), ("1", 2.0), ("10", 1.0), ("10", 3.0), ("12", 3.0), ("15", 2.0),
            ("15", 3.0)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--recipe", default="torch-fp32")
    ap.add_argument("--dataset", default="librispeech:dev-clean")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="window_sweep.json")
    args = ap.parse_args()
    if "test-" in args.dataset:
        raise SystemExit("choose settings on tuning data, never on a test set")
    model = resolve_model(args.model)
    utts, audios, silent = [], [], 0
    for spec in args.dataset.split(","):
        kept = 0
        for u in load_dataset(spec).utterances:
            a = u.load()
            if not np.abs(a).max():
                silent += 1
                continue
            if kept < args.limit:
                utts.append(u)
                audios.append(a)
                kept += 1
    print(f"{len(utts)} utterances with sound ({silent} silent files skipped)", flush=True)
    recipe = get_recipe(args.recipe)
    options = recipe.resolve_options({})
    artifact, _ = build_artifact(recipe, model.path, options)
    runtime = recipe.open(artifact, "cpu", args.threads)
    runtime.transcribe(audios[:1], DecodeOptions())  # warm-up
    table, full = [], None
    for floor, margin in SETTINGS:
        if margin is not None:
            features.WINDOW_MARGIN_S = margin
        runtime.window = floor
        t = time.perf_counter()
        texts = [runtime.transcribe([a], DecodeOptions())[0].text for a in audios]
        wall = time.perf_counter() - t
        counts = [utterance_errors(u.text, x)[0] for u, x in zip(utts, texts)]
        full = full or texts
        row = {"floor_s": int(floor), "margin_s": margin, "wer": round(100 * corpus_rate(counts), 2),
               "errors": sum(c.errors for c in counts), "changed": sum(a != b for a, b in zip(full, texts)),
               "eval_s": round(wall, 2)}
        table.append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        json.dump({"model": args.model, "recipe": args.recipe, "dataset": args.dataset, "utterances": len(utts),
                   "silent_skipped": silent, "settings": table}, f, indent=1)


if __name__ == "__main__":
    main()
