"""Many inputs into their output files (``whisperopt transcribe``), here or over a Ray cluster.

``FileRun`` plans the inputs (one output name each; those whose files an earlier run wrote are skipped, so an
interrupted run continues where it stopped), then decodes the rest here, one after another (``--pack``: the short
ones several to a window first), or spread over a Ray cluster (``transcribe.distributed``). Either way each input's
files are written whole here as it finishes and said in one line; an input that fails is one line and the others go
on; a full or read-only output folder stops the run (it would fail every input alike).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..constants import N_SAMPLES, SAMPLE_RATE
from ..data.audio import audio_file_problem, load_audio
from ..errors import WhisperoptError, described
from ..recipes.base import Recipe
from .inputs import plan
from .longform import Transcriber
from .options import TranscribeOptions
from .result import Segment, TranscriptResult
from .source import probe_duration
from .writers import OutputError, write_outputs

PACK_GROUP_S = 32 * 30.0  # audio loaded and packed at once by transcribe --pack (first fit over each group)


class FileProgress:
    """What the caller is shown of one input while it is decoded (the CLI: a progress bar; with --verbose, each
    segment); these defaults show nothing."""

    def started(self, duration: float) -> None:
        """The container's stated duration, once known."""

    def advanced(self, seconds: float) -> None:
        """Audio decoded so far."""

    def segment(self, segment: Segment) -> None:
        """A segment, as it is decoded."""


@contextmanager
def no_progress(stem: str) -> Iterator[FileProgress]:
    yield FileProgress()


def summary_line(name: str, result: TranscriptResult, paths: list[Path], seconds: float, where: str = "") -> str:
    """The line that says one input's files are written."""
    lang = f"{result.language} ({result.language_probability:.2f})" if result.language and \
        result.language_probability is not None else (result.language or "-")
    vad = f", VAD {result.vad['speech_s']:.1f} s speech in {result.vad['chunks']} chunks" if result.vad else ""
    return (f"{name}: {result.duration:.1f} s audio in {seconds:.1f} s{where}, language {lang}{vad}, "
            f"{len(result.segments)} segments -> {', '.join(str(p) for p in paths)}")


@dataclass
class FileRun:
    """One run over many inputs: where their files go, and what became of them. ``say`` takes one line per input
    written, ``error`` one line per input that failed (``NAME: why``); ``watch(stem)`` shows one input's decoding."""

    inputs: list[str]
    out_dir: Path
    formats: list[str]
    say: Callable[[str], None] = print
    error: Callable[[str], None] = print
    watch: Callable[[str], AbstractContextManager[FileProgress]] = no_progress
    done: int = 0
    failed: list[str] = field(default_factory=list)

    def plan(self, overwrite: bool) -> list[tuple[str, str]]:
        """The (input, output stem) pairs left to do: one output name per input, none over an input; inputs done by
        an earlier run counted done (unless ``overwrite``), unusable ones failed."""
        todo, self.done, self.failed = plan(self.inputs, self.out_dir, self.formats, overwrite, log=self.say,
                                            problem=audio_file_problem)
        return todo

    def transcribe(self, todo: list[tuple[str, str]], options: TranscribeOptions, model: str, recipe: Recipe, device: str,
                   threads: int | None, recipe_options: dict | None, verify: bool, ray: str | None = None,
                   log: Callable[[str], None] = print) -> None:
        """Decode ``todo`` with ``recipe`` (a registry ``Recipe``) on ``model``: here, or with ``ray`` (an address,
        or auto) over a cluster, one transcriber per ``threads`` CPUs (default 1) of each node."""
        try:
            if ray is not None:
                self._on_ray(todo, options, ray, model, recipe.name, device, threads or 1, recipe_options, verify,
                             log)
            else:
                transcriber = Transcriber.load(model, recipe, device=device, threads=threads,
                                               recipe_options=recipe_options, verify=verify, log=log)
                try:
                    self._here(transcriber, todo, options)
                finally:
                    transcriber.close()
        except OutputError as exc:  # a full or read-only output directory fails every input alike: stop here
            raise WhisperoptError(f"{exc} ({self.done} of {len(self.inputs)} input(s) done; re-run to continue)") \
                from None

    def end(self) -> int:
        """0, or the one error naming the inputs that failed."""
        if self.failed:
            raise WhisperoptError(f"{len(self.failed)} of {len(self.inputs)} input(s) failed: {', '.join(self.failed)}")
        return 0

    def _written(self, name: str, result: TranscriptResult, stem: str, seconds: float, where: str = "") -> None:
        paths = write_outputs(result, stem, self.out_dir, self.formats)
        self.say(summary_line(name, result, paths, seconds, where))
        self.done += 1

    def _fail(self, name: str, why: str) -> None:
        self.error(f"{name}: {why}")
        self.failed.append(name)

    def _on_ray(self, todo, options, address, model, recipe, device, threads, recipe_options, verify, log) -> None:
        from .distributed import transcribe_on_ray

        for name, stem, out in transcribe_on_ray(address, todo, model, recipe, device, threads, recipe_options,
                                                 verify, options, log=log):
            if "error" in out:
                self._fail(name, f"{out['error']} (node {out['node']})")
            else:
                self._written(name, out["result"], stem, out["seconds"], f" on {out['node']}")

    def _here(self, transcriber: Transcriber, todo: list[tuple[str, str]], options: TranscribeOptions) -> None:
        transcriber.check(options)
        if options.pack:  # short inputs packed several to a window; the rest below, one by one
            todo = self._packed(transcriber, todo, options)
        for name, stem in todo:
            self._one(transcriber, name, stem, options)

    def _one(self, transcriber: Transcriber, name: str, stem: str, options: TranscribeOptions) -> None:
        """Transcribe one input and write its files; a failure is this input's one line."""
        t0 = time.perf_counter()
        try:
            with self.watch(stem) as shown:
                segments, info = transcriber.stream(name, options, progress=shown.advanced)
                if info.duration:  # the container's stated duration
                    shown.started(info.duration)
                decoded = []
                for seg in segments:
                    decoded.append(seg)
                    shown.segment(seg)
            result = TranscriptResult(decoded, info.language, info.language_probability, info.duration, info.vad)
            self._written(name, result, stem, time.perf_counter() - t0)
        except OutputError:
            raise
        except WhisperoptError as exc:
            self._fail(name, str(exc))
        except Exception as exc:  # an engine's own failure on this input: one line, and the other inputs still run
            self._fail(name, described(exc))

    def _packed(self, transcriber: Transcriber, todo: list[tuple[str, str]],
                options: TranscribeOptions) -> list[tuple[str, str]]:
        """``transcribe --pack``: inputs that fit a packed window with their gap (by the container's stated duration,
        then by their samples) are decoded in groups of up to ``PACK_GROUP_S`` of audio through ``transcribe_clips``
        with packing, and written as usual (segments from each input's own start). Returns the inputs left for the
        ordinary path (longer, stdin, duration unknown)."""
        fits = N_SAMPLES / SAMPLE_RATE - options.pack_gap
        rest, group = [], []
        for name, stem in todo:
            seconds = None if name == "-" else probe_duration(name)
            if seconds is None or seconds > fits + 1:
                rest.append((name, stem))
                continue
            try:
                audio = load_audio(name)
            except WhisperoptError as exc:
                self._fail(name, str(exc))
                continue
            if len(audio) / SAMPLE_RATE > fits:  # the header understated it: the ordinary path streams it
                rest.append((name, stem))
                continue
            group.append((name, stem, audio))
            if sum(len(a) for _, _, a in group) / SAMPLE_RATE >= PACK_GROUP_S:
                self._pack_group(transcriber, group, options)
                group = []
        if group:
            self._pack_group(transcriber, group, options)
        return rest

    def _pack_group(self, transcriber: Transcriber, group: list, options: TranscribeOptions) -> None:
        """One group of short inputs decoded packed; the engine's failure fails the group's inputs, one line each."""
        t0 = time.perf_counter()
        before = transcriber.packing["windows"] + transcriber.packing["alone"]
        try:
            results = transcriber.transcribe_clips([a for _, _, a in group], options)
        except Exception as exc:
            why = str(exc) if isinstance(exc, WhisperoptError) else described(exc)
            for name, _, _ in group:
                self._fail(name, why)
            return
        seconds = time.perf_counter() - t0
        calls = transcriber.packing["windows"] + transcriber.packing["alone"] - before
        for (name, stem, _), result in zip(group, results):
            self._written(name, result, stem, seconds, f" (packed: {len(group)} inputs in {calls} windows)")
