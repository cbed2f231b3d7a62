"""Dynamic batching: every engine call on one worker thread; short clips with the same options decoded together.

Engines are not thread-safe and a CPU has only so many cores, so one thread does all engine work and the HTTP side
only queues jobs and waits for their futures. The worker takes the oldest job; if it is a short clip (≤ 30 s) it
also takes the waiting clips with the same decoding options (task, language, temperatures, prompt, word timestamps),
waiting up to ``max_wait_s`` from the oldest one's arrival for more, and stops at ``max_batch``; then one
``Transcriber.transcribe_clips`` call decodes them (one ``Runtime.decode_windows`` call for engines that batch).
Long audio runs alone through the ordinary long-form path. At most ``max_queue`` jobs are admitted at once (waiting
or being decoded); beyond that ``submit`` raises ``QueueFull`` (HTTP 503) instead of letting memory grow.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import WhisperoptError
from ..transcribe import TranscribeOptions, Transcriber, TranscriptResult


class QueueFull(Exception):
    """The server holds ``max_queue`` unfinished requests already."""


class ShuttingDown(Exception):
    """The server stopped before this request was decoded."""


class AudioTooLong(WhisperoptError):
    """Long-form audio turned out longer than the server's limit while it was decoded (its header said less)."""


@dataclass(eq=False)
class Job:
    """One request's audio and decoding options; ``future`` gets its ``TranscriptResult`` or exception.

    ``audio`` is a 16 kHz array for a clip (≤ 30 s, decoded when the request arrived) or the path of a temporary
    file for long audio (streamed by the worker, deleted once done)."""

    audio: np.ndarray | Path
    options: TranscribeOptions
    max_audio_s: float = float("inf")
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)

    @property
    def is_clip(self) -> bool:
        return isinstance(self.audio, np.ndarray)

    def discard(self) -> None:
        """Delete a long job's temporary file (a clip holds nothing on disk)."""
        if isinstance(self.audio, Path):
            self.audio.unlink(missing_ok=True)


class Batcher:
    """The single engine thread and its bounded queue (see the module docstring)."""

    def __init__(self, transcriber: Transcriber, max_batch: int = 8, max_wait_s: float = 0.02, max_queue: int = 32):
        self.transcriber = transcriber
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._admitted = 0  # submitted and not finished (waiting, being batched or decoded)
        self._running = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="whisperopt-engine", daemon=True)
        self.batch_sizes: Counter[int] = Counter()  # clip batches decoded, by size
        self.counts: Counter[str] = Counter()  # done, failed, cancelled, rejected, long

    # --- the HTTP side ---
    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def refuse_if_full(self) -> bool:
        """True (counted as a rejection) when a new request would find the queue full: checked from the headers,
        before an upload is read; ``submit`` decides for good."""
        with self._cond:
            if self._admitted < self.max_queue:
                return False
            self.counts["rejected"] += 1
            return True

    def submit(self, job: Job) -> Future:
        """Queue ``job``; raise ``QueueFull`` when ``max_queue`` jobs are unfinished, ``ShuttingDown`` after close."""
        with self._cond:
            if self._closed:
                raise ShuttingDown("the server is shutting down")
            if self._admitted >= self.max_queue:
                self.counts["rejected"] += 1
                raise QueueFull(f"the server has {self._admitted} requests in progress (--max-queue "
                                f"{self.max_queue}); retry later")
            self._admitted += 1
            self._waiting.append(job)
            self._cond.notify_all()
        job.future.add_done_callback(self._finished)  # a cancelled waiting job frees its place at once
        return job.future

    def _finished(self, future: Future) -> None:
        with self._cond:
            self._admitted -= 1
            self.counts["cancelled" if future.cancelled() else "failed" if future.exception() else "done"] += 1

    def stats(self) -> dict:
        with self._cond:
            sizes = dict(sorted(self.batch_sizes.items()))
            return {"queue": {"depth": self._admitted, "waiting": len(self._waiting), "running": self._running,
                              "max": self.max_queue},
                    "batching": {"max_batch": self.max_batch, "max_wait_ms": round(self.max_wait_s * 1000, 3),
                                 "batches": sum(sizes.values()), "largest": max(sizes, default=0),
                                 "batched_requests": sum(n * k for n, k in sizes.items() if n > 1),
                                 "sizes": {str(n): k for n, k in sizes.items()}},
                    "requests": {key: self.counts[key] for key in ("done", "failed", "cancelled", "rejected", "long")}}

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, fail the waiting ones (``ShuttingDown``), let the running one finish."""
        with self._cond:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
            self._cond.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ShuttingDown("the server stopped before this request was decoded"))
            job.discard()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # --- the engine thread ---
    def _take(self) -> list[Job] | None:
        """The next batch (jobs already marked running), or None once closed."""
        with self._cond:
            while True:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                first = self._waiting.popleft()
                if first.future.set_running_or_notify_cancel():
                    break
                first.discard()  # cancelled while it waited (its client went away)
            batch = [first]
            self._running = 1  # taken by this thread: being batched, then decoded
            if first.is_clip and self.max_batch > 1:
                deadline = first.arrived + self.max_wait_s
                while len(batch) < self.max_batch and not self._closed:
                    for job in list(self._waiting):
                        if len(batch) >= self.max_batch:
                            break
                        if job.is_clip and job.options == first.options:
                            self._waiting.remove(job)
                            if job.future.set_running_or_notify_cancel():
                                batch.append(job)
                                self._running = len(batch)
                    left = deadline - time.monotonic()
                    if len(batch) >= self.max_batch or left <= 0:
                        break
                    self._cond.wait(left)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                if batch[0].is_clip:
                    self._decode_clips(batch)
                else:
                    self._decode_long(batch[0])
            finally:
                with self._cond:
                    self._running = 0

    def _decode_clips(self, batch: list[Job]) -> None:
        with self._cond:
            self.batch_sizes[len(batch)] += 1
        try:
            results = self.transcriber.transcribe_clips([job.audio for job in batch], batch[0].options,
                                                        batch_size=len(batch))
        except Exception as exc:  # every request of the batch gets the engine's error
            for job in batch:
                job.future.set_exception(exc)
            return
        for job, result in zip(batch, results):
            job.future.set_result(result)

    def _decode_long(self, job: Job) -> None:
        with self._cond:
            self.counts["long"] += 1

        def guard(seconds: float) -> None:  # the container's header may understate the duration
            if seconds > job.max_audio_s:
                raise AudioTooLong(f"the audio is longer than this server's limit of {job.max_audio_s:g} s "
                                   "(--max-audio-s)")

        try:
            segments, info = self.transcriber.stream(job.audio, job.options, progress=guard)
            segments = list(segments)
            job.future.set_result(TranscriptResult(segments, info.language, info.language_probability,
                                                   info.duration or 0.0))
        except Exception as exc:  # handed to the request, which answers with it
            job.future.set_exception(exc)
        finally:
            job.discard()
