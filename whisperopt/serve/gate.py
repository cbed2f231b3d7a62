"""ASGI middleware in front of the app: what the headers already decide, and how long a body may take to arrive.

From the headers, before any upload is read: 401 without the API key (``/v1/`` and the docs routes), 413 for a
declared length over the limit, 503 when ``--max-queue`` requests are in progress — an upload takes its place in the
queue here (``Batcher.admit``) and holds it until its exchange ends, so uploads still arriving count against the
bound. While the body is read: 413 once it grows past the limit, 408 when it has not arrived whole within
``--upload-timeout`` of its head (a stalled or trickling upload), 503 when the server stops mid-upload. These
answers close the connection (the rest of the body is not read).

(FastAPI's own ``max_body_size`` would answer an over-long declared body in plain text, not OpenAI's JSON.)
"""

from __future__ import annotations

import asyncio
import hmac
import time

from starlette.exceptions import HTTPException as StarletteHTTPException

from .formats import APIError

DOC_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
SLOT = "whisperopt.slot"  # the scope key under which a route finds its request's place in the queue
CLOSE = {"Connection": "close"}


class BodyRefused(StarletteHTTPException):
    """Raised inside ``receive`` while a body is read; FastAPI's body parsing re-raises an HTTPException, and the app
    answers it with ``error``."""

    def __init__(self, error: APIError):
        super().__init__(error.status)
        self.error = error


def too_large(max_file_mb: float) -> APIError:
    return APIError(413, f"the request is larger than this server's limit of {max_file_mb:g} MB per file "
                    "(--max-file-mb)", "file", "file_too_large", CLOSE)


def busy() -> APIError:
    return APIError(503, "the server is at its request limit (--max-queue); retry later", code="queue_full",
                    headers={"Retry-After": "1"})


def stopping(what: str = "request") -> APIError:
    return APIError(503, f"the server is shutting down; this {what} was not completed", code="shutting_down",
                    headers=CLOSE)


def _header(scope, name: bytes) -> bytes:
    return dict(scope.get("headers") or []).get(name, b"")


class Gate:
    """The middleware (see the module docstring); ``service`` is the app's ``_Service``."""

    def __init__(self, app, service):
        self.app, self.service = app, service

    def _refusal(self, scope) -> APIError | None:
        settings = self.service.settings
        if settings.api_key is not None:
            scheme, _, token = _header(scope, b"authorization").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("latin-1"),
                                                                     settings.api_key.encode()):
                return APIError(401, "missing or incorrect API key: send 'Authorization: Bearer <key>' with the key "
                                "the server was started with", code="invalid_api_key")
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.service.max_body:
            return too_large(settings.max_file_mb)
        return None

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith("/v1/") or path in DOC_PATHS):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        slot = None
        if refusal is None and scope.get("method") == "POST" and path.startswith("/v1/audio/"):
            slot = self.service.batcher.admit()
            refusal = busy() if slot is None else None
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        scope[SLOT] = slot
        try:
            await self.app(scope, self._bounded(receive), send)
        finally:
            if slot is not None:
                self.service.batcher.release(slot)

    def _bounded(self, receive):
        """``receive`` for one request: the body within the size limit, the upload deadline and the server's life;
        once the body is whole, messages pass unchanged (a disconnect may come any time after)."""
        service = self.service
        limit, seen, whole = service.max_body, 0, False
        deadline = time.monotonic() + service.settings.upload_timeout

        async def bounded():
            nonlocal seen, whole
            if whole:
                return await receive()
            message = await _within(receive, service.stopped, deadline - time.monotonic(),
                                    service.settings.upload_timeout)
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyRefused(too_large(service.settings.max_file_mb))
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        return bounded


async def _within(receive, stopped: asyncio.Event, seconds: float, timeout: float) -> dict:
    """The next message, unless ``seconds`` pass first (408) or the server stops (503)."""
    get = asyncio.ensure_future(receive())
    halt = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({get, halt}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        halt.cancel()
        if not get.done():
            get.cancel()
    if get.done() and not get.cancelled():
        return get.result()
    if stopped.is_set():
        raise BodyRefused(stopping("upload"))
    raise BodyRefused(APIError(408, f"the upload did not arrive whole within {timeout:g} s (--upload-timeout)",
                               "file", "upload_timeout", CLOSE))
