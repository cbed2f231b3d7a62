"""Run the API under uvicorn: bind first (a taken port fails before the model loads), load, then serve."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

from ..errors import WhisperoptError
from ..files import os_reason
from .app import ServeSettings, create_app


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); a one-line error if it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise WhisperoptError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise WhisperoptError(f"cannot listen on {host}:{port}: {os_reason(exc)}") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: ServeSettings, model: str, recipe, host: str = "127.0.0.1", port: int = 8000,
          device: str = "cpu", threads: int | None = None, recipe_options: dict | None = None,
          log_level: str = "info", log: Callable[[str], None] | None = None) -> None:
    """Bind ``host:port``, load ``recipe`` of ``model``, serve the API until interrupted (Ctrl-C, SIGTERM: uvicorn
    finishes the requests in flight first)."""
    import uvicorn

    from ..transcribe import Transcriber

    settings.check()
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    sock = bind(host, port)
    try:
        transcriber = Transcriber.load(model, recipe, device=device, threads=threads, recipe_options=recipe_options,
                                       log=say)
        try:
            app = create_app(transcriber, settings)
            # a connection cap above the queue: uploads being read before admission cannot pile up without bound
            config = uvicorn.Config(app, log_level=log_level, limit_concurrency=4 * settings.max_queue + 64,
                                    timeout_graceful_shutdown=30)
            bound_host, bound_port = sock.getsockname()[:2]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            print(f"whisperopt serve: {settings.model_id} ({transcriber.recipe}) on http://{shown}:{bound_port} "
                  f"(max batch {settings.max_batch}, max wait {settings.max_wait_ms:g} ms, max queue "
                  f"{settings.max_queue}{', API key required' if settings.api_key else ''})", flush=True)
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            transcriber.close()
    finally:
        sock.close()
