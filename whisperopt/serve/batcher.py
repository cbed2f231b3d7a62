"""Dynamic batching: every engine call on one worker thread; short clips with the same options decoded together.

Engines are not thread-safe and a CPU has only so many cores, so one thread does all engine work and the HTTP side
only queues jobs and waits for their futures. The worker takes the oldest job; if it is a short clip (≤ 30 s) it
also takes the waiting clips with the same decoding options (task, language, temperatures, prompt, word timestamps),
waiting up to ``max_wait_s`` from the oldest one's arrival for more, and stops at ``max_batch``; then one
``Transcriber.transcribe_clips`` call decodes them (one ``Runtime.decode_windows`` call for engines that batch).
Long audio runs alone through the ordinary long-form path.

At most ``max_queue`` requests are admitted at once, counted from their request head (``admit``, while the upload is
still arriving) until both the HTTP exchange has ended and their job has finished; beyond that ``admit`` (or
``submit`` without a slot) refuses, HTTP 503, instead of letting memory and temporary files grow. A waiting job whose
client hangs up leaves the queue at once, its temporary file deleted. ``stop`` ends the engine's work: waiting jobs
fail with ``ShuttingDown``, a long job stops at its next 30-s window, a batch of clips in an engine call finishes.
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
class Slot:
    """One admitted request's place under ``max_queue``: held by its HTTP exchange and, once submitted, by its job;
    freed when both have let go."""

    holders: int = 1
    has_job: bool = False


@dataclass(eq=False)
class QueuedRequest:
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
        self._waiting: deque[QueuedRequest] = deque()
        self._admitted = 0  # slots held: uploads being received, jobs waiting, being batched or decoded
        self._receiving = 0  # slots without a job yet (the upload being read or decoded)
        self._running = 0
        self._closed = False
        self._stopped = False  # stop(): a running long job ends at its next window
        self._thread = threading.Thread(target=self._run, name="whisperopt-engine", daemon=True)
        self.batch_sizes: Counter[int] = Counter()  # clip batches decoded, by size
        self.counts: Counter[str] = Counter()  # done, failed, cancelled, rejected, long

    # --- the HTTP side ---
    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def admit(self) -> Slot | None:
        """A place for a new request, taken from its headers before its upload is read; None (counted as a
        rejection) when ``max_queue`` requests are in progress or the server is stopping. ``release`` it when the
        HTTP exchange ends."""
        with self._cond:
            if self._admitted >= self.max_queue or self._closed:
                self.counts["rejected"] += 1
                return None
            self._admitted += 1
            self._receiving += 1
            return Slot()

    def release(self, slot: Slot) -> None:
        """One holder of ``slot`` lets go; the last one frees its place."""
        with self._cond:
            slot.holders -= 1
            if slot.holders == 0:
                self._admitted -= 1
                if not slot.has_job:
                    self._receiving -= 1
                self._cond.notify_all()

    def submit(self, job: QueuedRequest, slot: Slot | None = None) -> Future:
        """Queue ``job`` under its request's ``slot`` (without one: a place is taken here, ``QueueFull`` if there is
        none); ``ShuttingDown`` once stopped."""
        with self._cond:
            if self._closed:
                raise ShuttingDown("the server is shutting down")
            if slot is None:
                if self._admitted >= self.max_queue:
                    self.counts["rejected"] += 1
                    raise QueueFull(f"the server has {self._admitted} requests in progress (--max-queue "
                                    f"{self.max_queue}); retry later")
                self._admitted += 1
                slot = Slot(holders=0, has_job=True)
            elif not slot.has_job:
                slot.has_job = True
                self._receiving -= 1
            slot.holders += 1
            self._waiting.append(job)
            self._cond.notify_all()
        job.future.add_done_callback(lambda future: self._finished(job, slot))
        return job.future

    def _finished(self, job: QueuedRequest, slot: Slot) -> None:
        """A job's future is done: counted; a cancelled one (its client hung up while it waited) leaves the queue and
        deletes its temporary file now, not when the engine thread reaches it."""
        cancelled = job.future.cancelled()
        with self._cond:
            self.counts["cancelled" if cancelled else "failed" if job.future.exception() else "done"] += 1
            if cancelled:
                try:
                    self._waiting.remove(job)
                except ValueError:  # already taken by the engine thread, which skips it
                    pass
        if cancelled:
            job.discard()
        self.release(slot)

    def stats(self) -> dict:
        with self._cond:
            sizes = dict(sorted(self.batch_sizes.items()))
            return {"queue": {"depth": self._admitted, "receiving": self._receiving, "waiting": len(self._waiting),
                              "running": self._running, "max": self.max_queue},
                    "batching": {"max_batch": self.max_batch, "max_wait_ms": round(self.max_wait_s * 1000, 3),
                                 "batches": sum(sizes.values()), "largest": max(sizes, default=0),
                                 "batched_requests": sum(n * k for n, k in sizes.items() if n > 1),
                                 "sizes": {str(n): k for n, k in sizes.items()}},
                    "requests": {key: self.counts[key] for key in ("done", "failed", "cancelled", "rejected", "long")}}

    def stop(self) -> None:
        """Stop taking jobs, fail the waiting ones (``ShuttingDown``), stop a long job at its next window; a batch of
        clips already in an engine call finishes. Returns at once (``close`` also waits for the engine thread)."""
        with self._cond:
            self._closed = self._stopped = True
            waiting, self._waiting = list(self._waiting), deque()
            self._cond.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ShuttingDown("the server stopped before this request was decoded"))
            job.discard()

    def close(self, timeout: float = 30.0) -> bool:
        """``stop``, then wait up to ``timeout`` for the engine thread to end; False if it is still running."""
        self.stop()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the engine thread ---
    def _take(self) -> list[QueuedRequest] | None:
        """The next batch (jobs already marked running), or None once closed."""
        with self._cond:
            while True:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                first = self._waiting.popleft()
                if first.future.set_running_or_notify_cancel():
                    break  # (one cancelled while it waited has already been discarded by _finished)
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

    def _decode_clips(self, batch: list[QueuedRequest]) -> None:
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

    def _decode_long(self, job: QueuedRequest) -> None:
        with self._cond:
            self.counts["long"] += 1

        def guard(seconds: float) -> None:  # called after each window
            if self._stopped:
                raise ShuttingDown(f"the server stopped after decoding {seconds:.0f} s of this audio")
            if seconds > job.max_audio_s:  # the container's header may understate the duration
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
