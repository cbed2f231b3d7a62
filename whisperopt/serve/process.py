"""Start ``whisperopt serve`` in a child process and wait until it answers (tests, the load benchmark, scripts)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import WhisperoptError

_LISTENING = re.compile(r"whisperopt serve: .* on http://(\S+?):(\d+) ")


class ServerProcess:
    """``whisperopt serve --port 0 ARGS`` (any free port, read from its first line); its output goes to ``log``.

    >>> with ServerProcess(["--model", "tiny.en", "--recipe", "ct2-int8"], Path("serve.log")) as server:
    ...     print(server.url, server.health()["status"])
    """

    def __init__(self, args: list[str], log: Path, timeout: float = 600.0, env: dict | None = None):
        self.args, self.log, self.timeout = list(args), Path(log), timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.port = 0

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Launch and wait (up to ``timeout``: a fresh cache builds the artifact first) until /health says ok."""
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "whisperopt.cli", "serve", "--port", "0", *self.args],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        while not self.url:
            found = _LISTENING.search(self.log.read_text(errors="replace"))
            if found:
                self.port = int(found.group(2))
                self.url = f"http://{found.group(1)}:{self.port}"
            else:
                self._check_alive(deadline, "did not start")
                time.sleep(0.2)
        while True:
            try:
                if self.health()["status"] == "ok":
                    return
            except OSError:
                pass
            self._check_alive(deadline, "never became healthy")
            time.sleep(0.1)

    def _check_alive(self, deadline: float, what: str) -> None:
        if self.proc.poll() is not None or time.monotonic() > deadline:
            self.stop()
            raise WhisperoptError(f"whisperopt serve {what} (exit {self.proc.returncode}); its log:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def health(self) -> dict:
        """GET /health (its JSON, also when it answers 503)."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (uvicorn finishes the requests in flight), SIGKILL after ``timeout``; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
