"""Load benchmark for ``whisperopt serve``: throughput and latency under concurrent clients, with and without batching.

Starts the server itself on 127.0.0.1 (a free port; nothing leaves this machine), once with dynamic batching
(``--max-batch 8``) and once without (``--max-batch 1``), and at each concurrency (1, 4, 16 by default) sends a fixed
number of real LibriSpeech test-clean utterances (≤ 30 s each, cycled) with the official openai client, each client
thread sending its next request when the previous one is answered. Bounded: ``--requests`` per level at most and
``--max-seconds`` per level at most (requests not sent by then are not sent).

Per level: throughput in audio seconds per wall second, latency p50 / p99 (client side, upload included), errors,
WER of the answers (batching must not change accuracy), mean batch size (from /health), and the server's peak RSS
(psutil samples every 50 ms; ``server_peak_rss_mb`` is the kernel's high-water mark, model load included).

    python benchmarks/serve_load.py --model tiny.en --recipe ct2-int8 --threads 2 --out serve_load.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a process (Linux): its resident high-water mark since it started."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """The largest RSS psutil sees in a process while running (every ``interval`` s)."""

    def __init__(self, pid: int, interval: float = 0.05):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(pid), interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss / 1024 / 1024)
            except Exception:
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def load_utterances(dataset: str, count: int) -> list[dict]:
    import soundfile as sf

    from whisperopt.data import load_dataset

    out = []
    for u in load_dataset(dataset).utterances:
        seconds = sf.info(u.audio).duration
        if seconds <= 30.0:  # one window each: every request can join a batch
            out.append({"name": Path(u.audio).name, "bytes": Path(u.audio).read_bytes(), "seconds": seconds,
                        "text": u.text})
        if len(out) == count:
            break
    return out


def run_level(server, client, model: str, utts: list[dict], concurrency: int, requests: int,
              max_seconds: float) -> dict:
    import openai

    from whisperopt.metrics.wer import corpus_rate, utterance_errors

    before = server.health()["batching"]
    order = itertools.cycle(range(len(utts)))
    lock = threading.Lock()
    sent = itertools.count()
    rows: list[dict] = []
    start = time.perf_counter()
    deadline = start + max_seconds

    def client_loop():
        while True:
            with lock:
                if next(sent) >= requests or time.perf_counter() > deadline:
                    return
                i = next(order)
            u = utts[i]
            t0 = time.perf_counter()
            try:
                text = client.audio.transcriptions.create(model=model, file=(u["name"], u["bytes"])).text
                error = None
            except openai.APIError as exc:
                text, error = "", f"{type(exc).__name__}: {getattr(exc, 'status_code', '')}"
            rows.append({"i": i, "latency": time.perf_counter() - t0, "text": text, "error": error})

    with RssSampler(server.pid) as rss, ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client_loop) for _ in range(concurrency)]:
            f.result()
    wall = time.perf_counter() - start
    after = server.health()["batching"]
    ok = [r for r in rows if r["error"] is None]
    audio = sum(utts[r["i"]]["seconds"] for r in ok)
    lat = np.array([r["latency"] for r in ok]) if ok else np.zeros(1)
    batches = after["batches"] - before["batches"]
    words = [utterance_errors(utts[r["i"]]["text"], r["text"])[0] for r in ok]
    wer = corpus_rate(words)
    return {"concurrency": concurrency, "requests": len(rows), "errors": len(rows) - len(ok),
            "wall_s": round(wall, 2), "audio_s": round(audio, 1),
            "throughput_audio_s_per_s": round(audio / wall, 2) if wall else None,
            "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
            "latency_p99_s": round(float(np.percentile(lat, 99)), 3),
            "mean_batch": round(len(ok) / batches, 2) if batches else None,
            "wer_percent": round(100 * wer, 2) if wer is not None else None,
            "peak_rss_mb": round(rss.peak, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--recipe", default="ct2-int8")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    p.add_argument("--requests", type=int, default=None,
                   help="requests per level (default max(16, 4 x concurrency))")
    p.add_argument("--max-seconds", type=float, default=60.0, help="wall-time bound per level (default 60)")
    p.add_argument("--max-batch", type=int, default=8, help="the batching run's --max-batch (the other run uses 1)")
    p.add_argument("--max-wait-ms", type=float, default=20.0)
    p.add_argument("--utterances", type=int, default=32, help="distinct test-clean utterances to cycle through")
    p.add_argument("--dataset", default="librispeech:test-clean")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    import openai

    from whisperopt.serve.process import ServerProcess

    levels = [int(c) for c in args.concurrency.split(",")]
    utts = load_utterances(args.dataset, args.utterances)
    report = {"model": args.model, "recipe": args.recipe, "threads": args.threads, "cpus": os.cpu_count(),
              "utterances": len(utts), "mean_utterance_s": round(float(np.mean([u["seconds"] for u in utts])), 2),
              "max_wait_ms": args.max_wait_ms, "runs": []}
    for batching, max_batch in (("on", args.max_batch), ("off", 1)):
        server_args = ["--model", args.model, "--recipe", args.recipe, "--max-batch", str(max_batch),
                       "--max-wait-ms", str(args.max_wait_ms), "--max-queue", str(4 * max(levels)),
                       "--log-level", "warning"]
        if args.threads:
            server_args += ["--threads", str(args.threads)]
        log = Path(tempfile.gettempdir()) / f"whisperopt-serve-load-{batching}.log"
        with ServerProcess(server_args, log) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=600)
            for u in utts[:2]:  # warm-up: the first engine calls allocate
                client.audio.transcriptions.create(model=args.model, file=(u["name"], u["bytes"]))
            for c in levels:
                n = args.requests or max(16, 4 * c)
                row = {"batching": batching, "max_batch": max_batch,
                       **run_level(server, client, args.model, utts, c, n, args.max_seconds)}
                report["runs"].append(row)
                print(json.dumps(row), flush=True)
            report.setdefault("server_peak_rss_mb", {})[batching] = _peak_rss_mb(server.pid)
    _print_table(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _print_table(report: dict) -> None:
    print(f"\n{report['model']} / {report['recipe']}, {report['utterances']} test-clean utterances "
          f"(mean {report['mean_utterance_s']} s), {report['threads'] or report['cpus']} engine threads")
    head = ["batching", "conc.", "req", "err", "audio-s/s", "p50 s", "p99 s", "batch", "WER %", "RSS MB"]
    print("  ".join(f"{h:>9}" for h in head))
    for r in report["runs"]:
        cells = [r["batching"], r["concurrency"], r["requests"], r["errors"], r["throughput_audio_s_per_s"],
                 r["latency_p50_s"], r["latency_p99_s"], r["mean_batch"], r["wer_percent"], r["peak_rss_mb"]]
        print("  ".join(f"{'-' if c is None else c:>9}" for c in cells))
    print(f"server peak RSS (VmHWM, load included): {report.get('server_peak_rss_mb')}")


if __name__ == "__main__":
    sys.exit(main())
