"""Run the API under uvicorn: bind first (a taken port fails before the model loads), load, then serve; stop
gracefully on SIGTERM / Ctrl-C.

The stop: the listening socket closes at once; requests in flight get ``--grace`` seconds to finish; then the engine
stops (``_Service.stop``: waiting requests, a long one between two windows and uploads still arriving are answered
503 ``shutting_down`` in OpenAI's JSON), the engine thread is joined before the model is closed (an engine thread
still running at interpreter exit aborts the process in C++), and ``serve`` returns: the command exits 0.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sys
from collections.abc import Callable

from ..errors import WhisperoptError
from ..files import os_reason
from .app import create_app
from .settings import HEAD_TIMEOUT_S, ServeSettings

STOP_MARGIN_S = 30.0  # after the grace: a batch already in an engine call finishes, and the answers go out


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


def check_exposure(settings: ServeSettings, host: str, sock: socket.socket) -> str:
    """Fail closed: without an API key the server may listen on a loopback address only, unless ``--no-auth``.
    Returns the start-up line's words on authentication."""
    if settings.api_key is not None:
        return "API key required"
    try:
        loopback = ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if settings.no_auth:
        return "no API key (--no-auth)" + ("" if loopback else ": anyone who reaches this port can use it")
    if not loopback:
        raise WhisperoptError(f"--host {host} is reachable from other machines and no API key is set: give "
                              "--api-key-file FILE (or --api-key / $WHISPEROPT_API_KEY), or --no-auth to serve "
                              "without one")
    return "no API key (loopback only)"


def _uvicorn_classes(service, grace: float):
    """uvicorn's server and h11 protocol, with whisperopt's graceful stop and head deadline."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        """A connection that has not sent a whole request head within ``HEAD_TIMEOUT_S`` of opening (or of its
        previous answer) is closed: idle or trickling heads (slow-loris) cannot hold connections forever."""

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._await_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._await_head()

        def _await_head(self) -> None:
            cycle = self.cycle

            def late() -> None:
                if self.cycle is cycle and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(HEAD_TIMEOUT_S, late)

    class Server(uvicorn.Server):
        stop_signal: int | None = None

        def handle_exit(self, sig, frame) -> None:
            self.stop_signal = self.stop_signal or sig
            super().handle_exit(sig, frame)
            # uvicorn raises the signal again once it has stopped, to end the process by it; here the graceful stop
            # is how serve ends (exit 0), and the CLI's own SIGTERM handler would turn it into "interrupted"
            getattr(self, "_captured_signals", []).clear()

        async def shutdown(self, sockets=None) -> None:
            print(f"whisperopt serve: stopping; requests in flight have {grace:g} s to finish (--grace)",
                  file=sys.stderr, flush=True)
            later = asyncio.get_running_loop().call_later(grace, service.stop)
            try:
                await super().shutdown(sockets)
            finally:
                later.cancel()

    return Server, Protocol


def serve(settings: ServeSettings, model: str, recipe, host: str = "127.0.0.1", port: int = 8000,
          device: str = "cpu", threads: int | None = None, recipe_options: dict | None = None,
          log_level: str = "info", log: Callable[[str], None] | None = None, verify: bool = False) -> None:
    """Bind ``host:port``, load ``recipe`` of ``model``, serve the API until SIGTERM / Ctrl-C, then stop
    gracefully (module docstring)."""
    import uvicorn

    from ..transcribe import Transcriber

    settings.check()
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    sock = bind(host, port)
    try:
        auth = check_exposure(settings, host, sock)
        transcriber = Transcriber.load(model, recipe, device=device, threads=threads, recipe_options=recipe_options,
                                       log=say, verify=verify)  # verify: sha256 of every file (an export's too)
        try:
            app = create_app(transcriber, settings)
            service = app.state.service
            server_class, protocol = _uvicorn_classes(service, settings.grace)
            # a connection cap above the queue: uploads being read before admission cannot pile up without bound
            config = uvicorn.Config(app, log_level=log_level, limit_concurrency=4 * settings.max_queue + 64,
                                    http=protocol, timeout_graceful_shutdown=int(settings.grace + STOP_MARGIN_S))
            bound_host, bound_port = sock.getsockname()[:2]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            print(f"whisperopt serve: {settings.model_id} ({transcriber.recipe}) on http://{shown}:{bound_port} "
                  f"(max batch {settings.max_batch}, max wait {settings.max_wait_ms:g} ms, max queue "
                  f"{settings.max_queue}, {'VAD filter, ' if settings.vad_filter else ''}{auth}, "
                  f"docs {'on' if settings.docs else 'off'})", flush=True)
            server = server_class(config)
            try:
                server.run(sockets=[sock])
            finally:  # also after a second Ctrl-C (uvicorn's forced exit skips the app's shutdown)
                if not service.batcher.close(STOP_MARGIN_S):
                    say("whisperopt serve: the engine thread did not stop; exiting without closing the model")
                    os._exit(1)
            if server.stop_signal is not None:
                print("whisperopt serve: stopped", file=sys.stderr, flush=True)
        finally:
            transcriber.close()
    finally:
        sock.close()
