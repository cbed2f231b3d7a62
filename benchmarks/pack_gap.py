"""Choose --pack's silence gap and tail margin: packed against unpacked on the same utterances, one model load.

    python benchmarks/pack_gap.py --recipe ct2-int8 --dataset librispeech:dev-clean --gaps 0.5,1,2 --tails 0,2

Unpacked is the bench's measured pass (``Runtime.transcribe``, no timestamps, one utterance per call); packed is the
bench's packed pass (``bench.worker.packed_options``: ``Transcriber.transcribe_clips`` with ``pack``), once per gap
and tail margin. Prints a Markdown table: windows decoded (+ clips decoded again alone, by reason), WER, the paired
ΔWER against unpacked with its 95 % paired-bootstrap interval, RTFx. Tune on dev-clean (or another non-test split),
never on test-clean. The figures behind transcribe/packing.py's defaults are written next to them.
"""
import argparse
import time

from whisperopt.bench.worker import packed_options
from whisperopt.data import SAMPLE_RATE, load_dataset
from whisperopt.data.datasets import is_test_data
from whisperopt.metrics.bootstrap import paired_delta_ci
from whisperopt.metrics.wer import corpus_rate, utterance_errors
from whisperopt.recipes.base import DecodeOptions
from whisperopt.transcribe import Transcriber, packing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--recipe", default="ct2-int8")
    ap.add_argument("--dataset", default="librispeech:dev-clean")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gaps", default="0.5,1,2")
    ap.add_argument("--tails", default="0")
    args = ap.parse_args()
    utts = load_dataset(args.dataset).limit(args.limit).utterances
    if any(is_test_data(u.audio) for u in utts):
        raise SystemExit(f"{args.dataset}: tune on dev-clean (or another non-test split), never on test data")
    tr = Transcriber.load(args.model, args.recipe, threads=args.threads)
    clips = [u.load() for u in utts]
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE
    decode = DecodeOptions()
    tr.runtime.transcribe(clips[:1], decode)  # warm-up
    t = time.perf_counter()
    base = [tr.runtime.transcribe([c], decode)[0].text for c in clips]
    rtfx = audio_s / (time.perf_counter() - t)
    base_counts = [utterance_errors(u.text, h)[0] for u, h in zip(utts, base)]
    print(f"{args.model} {args.recipe}, {args.dataset}: {len(utts)} utterances, {audio_s:.0f} s of audio, "
          f"{args.threads} threads\n")
    print("| gap s | tail s | windows (+ alone: reasons) | WER % | ΔWER packed − unpacked [95 % CI] | RTFx |")
    print("|---:|---:|---|---:|---|---:|")
    print(f"| unpacked | | {len(clips)} | {100 * corpus_rate(base_counts):.2f} | | {rtfx:.1f} |")
    for gap in (float(g) for g in args.gaps.split(",")):
        for tail in (float(x) for x in args.tails.split(",")):
            packing.TAIL_MARGIN_S = tail
            tr.packing.clear()
            t = time.perf_counter()
            results = tr.transcribe_clips(clips, packed_options(decode, gap))
            wall = time.perf_counter() - t
            counts = [utterance_errors(u.text, r.text)[0] for u, r in zip(utts, results)]
            d = paired_delta_ci(base_counts, counts)
            why = ", ".join(f"{k[7:]} {v}" for k, v in sorted(tr.packing.items()) if k.startswith("alone: "))
            print(f"| {gap:g} | {tail:g} | {tr.packing['windows']} + {tr.packing['alone']}{f' ({why})' if why else ''}"
                  f" | {100 * corpus_rate(counts):.2f} | {100 * d['delta']:+.2f} [{100 * d['lo']:+.2f}, "
                  f"{100 * d['hi']:+.2f}] | {audio_s / wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
