"""``whisperopt transcribe --ray``: many files spread over a Ray cluster.

One Ray actor per ``--threads`` CPUs of each node holds a loaded ``Transcriber`` (the model is loaded once per actor,
not per file); ``ray.util.ActorPool`` hands each file to the next free actor. A file travels as its bytes through
Ray's object store (the nodes need not share a filesystem) and comes back as a ``TranscriptResult``, which the caller
writes exactly as a local run does. A file the engine cannot decode fails alone (its error comes back as a value);
an actor whose process dies is restarted by Ray and its file retried.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..cluster import alive_nodes, connect, ray_error, this_node
from ..errors import WhisperoptError, described

RESTARTS = 2  # restarts of an actor whose process died, and retries of the file it held


class TranscribeWorker:
    """A Ray actor: one loaded recipe on one node."""

    def __init__(self, model: str, recipe: str, device: str, threads: int, recipe_options: dict | None,
                 verify: bool, options):
        from .longform import Transcriber

        self.options = options
        self.transcriber = Transcriber.load(model, recipe, device=device, threads=threads,
                                            recipe_options=recipe_options, verify=verify)
        self.transcriber.check(options)

    def transcribe(self, key: int, name: str, data: bytes) -> dict:
        """{"result"} or {"error"} (one line) for one file's bytes; the node and seconds it took either way."""
        import ray

        t0 = time.perf_counter()
        out = {"key": key, "node": this_node(ray)}
        with tempfile.TemporaryDirectory(prefix="whisperopt-ray-") as tmp:
            path = Path(tmp) / ("input" + (Path(name).suffix if name != "-" else ""))
            path.write_bytes(data)
            try:
                out["result"] = self.transcriber.transcribe(str(path), self.options)
            except WhisperoptError as exc:
                out["error"] = str(exc).replace(str(path), name)
            except Exception as exc:  # an engine's own failure on this input: the other inputs still run
                out["error"] = described(exc).replace(str(path), name)
        out["seconds"] = time.perf_counter() - t0
        return out


def _read(name: str) -> bytes:
    import sys

    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


def transcribe_on_ray(address: str | None, inputs: list[tuple[str, str]], model: str, recipe: str, device: str,
                      threads: int, recipe_options: dict | None, verify: bool, options,
                      log=print) -> Iterator[tuple[str, str, dict]]:
    """Yield ``(name, stem, outcome)`` per input as the cluster finishes it (any order); ``outcome`` is the actor's
    dict: ``result`` (a ``TranscriptResult``) or ``error``, and ``node`` and ``seconds``."""
    from ray.util import ActorPool

    ray = connect(address, log)
    gpus = 1 if device == "cuda" else 0
    nodes = alive_nodes(ray, threads, gpus)
    slots = sum(n["cpus"] // threads for n in nodes)
    count = max(1, min(len(inputs), slots))
    log(f"ray: {count} transcriber(s) of {threads} CPU(s) on {len(nodes)} node(s) for {len(inputs)} input(s)")
    actor = ray.remote(TranscribeWorker).options(num_cpus=threads, num_gpus=gpus, max_restarts=RESTARTS,
                                                 max_task_retries=RESTARTS)
    workers = [actor.remote(model, recipe, device, threads, recipe_options, verify, options) for _ in range(count)]
    try:
        ray.get([w.__ray_ready__.remote() for w in workers])
    except ray.exceptions.RayError as exc:  # the model or recipe failed to load: every input would fail alike
        raise WhisperoptError(ray_error(exc)) from None
    pool = ActorPool(workers)
    for key in range(len(inputs)):
        pool.submit(lambda w, key: w.transcribe.remote(key, inputs[key][0], _read(inputs[key][0])), key)
    try:
        while pool.has_next():
            try:
                out = pool.get_next_unordered()
            except ray.exceptions.RayError as exc:  # its actor died more often than Ray restarts it
                raise WhisperoptError(f"a transcriber failed for good: {ray_error(exc)}") from None
            yield *inputs[out["key"]], out
    finally:
        for w in workers:
            ray.kill(w)
