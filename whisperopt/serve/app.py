"""An OpenAI-compatible transcription API (FastAPI) over one loaded ``Transcriber``.

Routes: ``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations`` (multipart ``file``, ``model``,
``language``, ``prompt``, ``response_format`` json | text | srt | vtt | verbose_json, ``temperature``,
``timestamp_granularities[]``), ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``.

A request is refused as early as possible: without the API key (401) or with the queue full (503) before its body is
read, over the size limit (413) or too slow (408) while it is read (``gate.py``), for a bad field (400) before its
audio is decoded; the audio is decoded on a worker thread (400 if it is not audio or longer than the duration limit)
and queued for the engine thread (``batcher.py``). Every error has OpenAI's body,
``{"error": {"message", "type", "param", "code"}}``. A client that disconnects while its request waits takes the
request out of the queue. ``/docs``, ``/redoc`` and ``/openapi.json`` exist only with ``docs`` on (behind the key).
"""

import asyncio
import logging
import os
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..constants import SAMPLE_RATE
from ..errors import WhisperoptError, described
from ..files import os_reason
from ..transcribe import TranscribeOptions, Transcriber, TranscriptResult
from ..transcribe.segments import resolve_language
from ..transcribe.vad import VAD_FIELDS
from .batcher import AudioTooLong, Batcher, QueuedRequest, QueueFull, ShuttingDown
from .formats import GRANULARITIES, RESPONSE_FORMATS, APIError, json_body, text_body
from .gate import SLOT, BodyRefused, Gate, busy, stopping, too_large
from .settings import MIB, ServeSettings

log = logging.getLogger("whisperopt.serve")

FORM_SLACK = 64 * 1024  # body bytes allowed beyond the file: the other fields and the multipart framing
MODEL_ALIASES = ("whisper-1",)  # the id OpenAI clients send by default; answered by the served model
FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # temperature 0: OpenAI's "increase the temperature until thresholds hit"
Text = Annotated[str | None, Form()]  # an optional text field (FastAPI resolves route annotations at module level)


class _Service:
    """The app's state: settings, the transcriber and its engine thread."""

    def __init__(self, transcriber: Transcriber, settings: ServeSettings):
        self.transcriber, self.settings = transcriber, settings
        self.batcher = Batcher(transcriber, settings.max_batch, settings.max_wait_ms / 1000, settings.max_queue)
        self.created = int(time.time())
        self.max_body = settings.max_file_bytes + FORM_SLACK
        self.stopped = asyncio.Event()  # set when the grace after SIGTERM is over: uploads still arriving get 503
        runtime = transcriber.runtime
        self.plain = bool(runtime.long_form_unsupported)  # a text-only engine: 30-s chunks, no timestamps
        self.base = TranscribeOptions(mode="plain" if self.plain else "sequential", beam_size=settings.beam_size,
                                      batch_size=settings.max_batch, pack=settings.pack, pack_gap=settings.pack_gap,
                                      loop_repeats=settings.loop_repeats,
                                      **{name: getattr(settings, name) for name in VAD_FIELDS})
        transcriber.check(self.base)  # --pack with a text-only engine: one line before the port serves anything

    def stop(self) -> None:
        """The grace is over: the engine stops (waiting requests and a long one between windows get 503), uploads
        still arriving get 503. Call on the event loop."""
        self.stopped.set()
        self.batcher.stop()

    def options(self, task: str, model: str | None, language: str | None, prompt: str | None, response_format: str,
                temperature: float, granularities: list[str] | None) -> tuple[TranscribeOptions, tuple[str, ...]]:
        """Check a request's fields (400/404 in OpenAI's words) and turn them into decoding options."""
        s, t = self.settings, self.transcriber
        if model and model != s.model_id and model not in MODEL_ALIASES:
            raise APIError(404, f"model {model!r} is not served here; this server serves {s.model_id!r} (also "
                           f"accepted: {', '.join(MODEL_ALIASES)})", "model", "model_not_found")
        if response_format not in RESPONSE_FORMATS:
            raise APIError(400, f"unknown response_format {response_format!r}; choose from "
                           f"{', '.join(RESPONSE_FORMATS)}", "response_format", "invalid_value")
        if not 0.0 <= temperature <= 1.0:
            raise APIError(400, f"temperature must be between 0 and 1, got {temperature}", "temperature",
                           "invalid_value")
        grains = tuple(dict.fromkeys(granularities or ()))
        bad = [g for g in grains if g not in GRANULARITIES]
        if bad:
            raise APIError(400, f"unknown timestamp granularity {bad[0]!r}; choose from {', '.join(GRANULARITIES)}",
                           "timestamp_granularities", "invalid_value")
        words = "word" in grains
        if words and response_format != "verbose_json":
            raise APIError(400, "timestamp_granularities[]=word needs response_format=verbose_json",
                           "timestamp_granularities", "invalid_value")
        if words and (self.plain or t.runtime.word_timestamps_unsupported):
            why = t.runtime.word_timestamps_unsupported if not self.plain else "the engine returns text only"
            raise APIError(400, f"word timestamps are not available with recipe {s.recipe or 'this recipe'} "
                           f"({why}); serve a torch-* recipe for them", "timestamp_granularities", "unsupported_value")
        if task == "translate" and not t.vocab.multilingual:
            raise APIError(400, f"model {s.model_id} is English-only and cannot translate; serve a multilingual "
                           "model (e.g. --model base) for /v1/audio/translations", "model", "unsupported_task")
        try:
            code = resolve_language(language, t.vocab)
        except WhisperoptError as exc:
            raise APIError(400, str(exc), "language", "invalid_value") from None
        temps = FALLBACK if temperature == 0 else (float(temperature),)
        opts = replace(self.base, task=task, language=code, initial_prompt=(prompt or "").strip() or None,
                       temperature=temps, word_timestamps=words)
        try:
            t.check(opts)
        except WhisperoptError as exc:
            raise APIError(400, str(exc)) from None
        return opts, grains

    def prepare(self, upload: UploadFile, options: TranscribeOptions) -> QueuedRequest:
        """Save and decode the upload (on a worker thread): a clip (≤ 30 s) becomes a 16 kHz array; longer audio
        stays a temporary file that the engine thread streams. 400 if it is not audio or over the duration limit."""
        from ..data.stream import stream_audio
        from ..transcribe.source import probe_duration

        name = upload.filename or "the upload"
        limit = self.settings.max_audio_s
        too_long = f"is longer than this server's limit of {limit:g} s (--max-audio-s)"
        suffix = "".join(c for c in Path(name).suffix[:12] if c.isalnum() or c == ".")
        fd, tmp = tempfile.mkstemp(prefix="whisperopt-serve-", suffix=suffix)
        keep = False
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(upload.file, out, MIB)
            stated = probe_duration(tmp)
            if stated is not None and stated > limit:
                raise APIError(400, f"{name}: the audio ({stated:.1f} s) {too_long}", "file", "audio_too_long")
            blocks = stream_audio(tmp)  # 30-s blocks: one block means a clip
            try:
                first = next(blocks, None)
                second = next(blocks, None) if first is not None else None
            finally:
                blocks.close()
            if first is None or len(first) == 0:
                raise APIError(400, f"{name}: the file holds no audio samples", "file", "invalid_audio")
            if second is None:
                if len(first) / SAMPLE_RATE > limit:
                    raise APIError(400, f"{name}: the audio ({len(first) / SAMPLE_RATE:.1f} s) {too_long}", "file",
                                   "audio_too_long")
                return QueuedRequest(first, options)
            keep = True
            return QueuedRequest(Path(tmp), options, max_audio_s=limit)
        except WhisperoptError as exc:
            raise APIError(400, str(exc).replace(tmp, name), "file", "invalid_audio") from None
        except OSError as exc:  # the server's temporary directory is full or read-only
            raise APIError(500, f"the server cannot store the upload: {os_reason(exc)}", code="server_error") from None
        finally:
            if not keep:
                Path(tmp).unlink(missing_ok=True)


async def _disconnected(request: Request) -> None:
    """Return once the client has gone away (the body is read by then, so only a disconnect message is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(transcriber: Transcriber, settings: ServeSettings) -> FastAPI:
    """The FastAPI app serving ``transcriber`` (loaded by the caller, who also closes it). Its engine thread starts
    and stops with the app's lifespan."""
    settings.check()
    service = _Service(transcriber, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.batcher.close)

    docs = settings.docs  # off by default: the schema tells a stranger every route and field
    app = FastAPI(title="whisperopt", summary="OpenAI-compatible speech-to-text", lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.service = service
    app.add_middleware(Gate, service=service)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query")]
        param = loc[0] if loc else None
        if param == "file" and first.get("type") == "missing":
            message = "no audio: send the audio file as the multipart form field 'file'"
        else:
            message = f"{param or 'request'}: {first.get('msg', 'invalid value')}"
        return APIError(400, message, param, "invalid_value").response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # a bug: OpenAI's body; uvicorn logs the traceback
        return APIError(500, f"internal error: {described(exc)}", code="server_error").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc, BodyRefused):
            return exc.error.response()
        if exc.status_code == 413:
            return too_large(settings.max_file_mb).response()
        return APIError(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None)).response()

    async def handle(request: Request, task: str, file: UploadFile, model: str | None, language: str | None,
                     prompt: str | None, response_format: str, temperature: float,
                     granularities: list[str] | None) -> Response:
        opts, grains = service.options(task, model, language, prompt, response_format, temperature, granularities)
        if file.size is not None and file.size > settings.max_file_bytes:
            raise APIError(413, f"{file.filename or 'the file'} is {file.size / MIB:.2f} MB; this server takes files "
                           f"up to {settings.max_file_mb:g} MB (--max-file-mb)", "file", "file_too_large")
        job = await run_in_threadpool(service.prepare, file, opts)
        try:
            future = service.batcher.submit(job, request.scope.get(SLOT))
        except QueueFull:
            job.discard()
            raise busy() from None
        except ShuttingDown:
            job.discard()
            raise stopping() from None
        result = await _outcome(request, future)
        if result is None:  # the client went away: nobody to answer
            return Response(status_code=499)
        if response_format in ("json", "verbose_json"):
            return JSONResponse(json_body(result, response_format, task, grains))
        return PlainTextResponse(text_body(result, response_format))

    async def _outcome(request: Request, future) -> TranscriptResult | None:
        waiter = asyncio.wrap_future(future)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this task is cancelled: the job must not outlive its request
            gone.cancel()
            if not waiter.done():
                waiter.cancel()  # still waiting: leaves the queue; being decoded: finishes, the answer is dropped
        if waiter.cancelled():
            return None
        try:
            return waiter.result()
        except AudioTooLong as exc:
            raise APIError(400, str(exc), "file", "audio_too_long") from None
        except ShuttingDown as exc:
            raise APIError(503, str(exc), code="shutting_down", headers={"Connection": "close"}) from None
        except WhisperoptError as exc:
            raise APIError(400, str(exc), "file", "invalid_audio") from None
        except Exception as exc:
            log.exception("the engine failed on a request")
            raise APIError(500, f"the engine failed: {described(exc)}", code="engine_error") from None

    @app.post("/v1/audio/transcriptions", summary="Transcribe audio into the input language")
    async def transcriptions(
        request: Request,
        file: Annotated[UploadFile, File(description="audio in any format PyAV/ffmpeg decodes")],
        model: Text = None,
        language: Annotated[str | None, Form(description="ISO-639-1 code or name; omitted: detected")] = None,
        prompt: Text = None,
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float, Form(description="0: fall back to higher temperatures as needed")] = 0.0,
        timestamp_granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
    ) -> Response:
        return await handle(request, "transcribe", file, model, language, prompt, response_format, temperature,
                            timestamp_granularities)

    @app.post("/v1/audio/translations", summary="Translate audio into English")
    async def translations(
        request: Request,
        file: Annotated[UploadFile, File(description="audio in any format PyAV/ffmpeg decodes")],
        model: Text = None,
        prompt: Text = None,
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float, Form()] = 0.0,
    ) -> Response:
        return await handle(request, "translate", file, model, None, prompt, response_format, temperature, None)

    def _model_card() -> dict:
        return {"id": settings.model_id, "object": "model", "created": service.created, "owned_by": "whisperopt"}

    @app.get("/v1/models", summary="The served model")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card()]}

    @app.get("/v1/models/{model_id:path}", summary="One model")
    async def model_card(model_id: str) -> dict:
        if model_id != settings.model_id and model_id not in MODEL_ALIASES:
            raise APIError(404, f"model {model_id!r} is not served here; this server serves {settings.model_id!r}",
                           "model", "model_not_found")
        return _model_card()

    @app.get("/health", summary="Liveness, queue depth and batching counters")
    async def health() -> JSONResponse:
        ok = service.batcher.alive
        body = {"status": "ok" if ok else "engine thread stopped", "model": settings.model_id,
                "recipe": settings.recipe, **service.batcher.stats()}
        return JSONResponse(body, 200 if ok else 503)

    return app
