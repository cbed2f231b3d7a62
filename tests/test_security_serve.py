"""`whisperopt serve` fails closed (issue 24): the API key, the schema routes, upload deadlines and the queue bound,
disconnects, the graceful stop on SIGTERM, and bad audio as a 400 with the CLI's message.

A real server (tiny.en ct2-int8) in a subprocess on 127.0.0.1 with its own TMPDIR, so the tests can see that no
upload is left behind; raw sockets for uploads that stall or hang up."""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from whisperopt.cli import main
from whisperopt.errors import WhisperoptError

from .test_serve import KEY, SR, Server, _answer, _until, _upload, httpx, wer

UPLOAD_TIMEOUT = 4


def _temp_files(server: Server) -> list[Path]:
    return sorted(server.temp.glob("whisperopt-serve-*"))


def _start(tmp_path_factory, name: str, *args: str) -> Server:
    temp = tmp_path_factory.mktemp(f"{name}-tmp")
    key = temp.parent / f"{name}.key"
    key.write_text(f"{KEY}\n")
    server = Server(tmp_path_factory.mktemp("serve") / f"{name}.log", "--model", "tiny.en", "--recipe", "ct2-int8",
                    "--api-key-file", str(key), *args, env={"TMPDIR": str(temp)})
    server.temp = temp
    return server


def _post(server: Server, audio: bytes, name: str = "a.flac") -> httpx.Response:
    """A whole request from a client that keeps its connection (the openai client's way): a refusal sent before the
    body was read reaches it (with ``Connection: close`` a raw socket may see a reset instead)."""
    return httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": (name, audio)},
                      data={"model": "tiny.en"}, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


def _clean_exit(server: Server, code: int | None) -> None:
    log = server.log.read_text(errors="replace")
    assert code == 0, f"exit {code}:\n{server.tail()}"
    for bad in ("Traceback", "terminate called", "Exception in ASGI application"):
        assert bad not in log, server.tail()
    assert not _temp_files(server)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, tiny_en):
    """--docs behind the key, two requests at once, a 4-s upload deadline."""
    server = _start(tmp_path_factory, "guarded", "--docs", "--max-queue", "2", "--upload-timeout", str(UPLOAD_TIMEOUT))
    yield server
    _clean_exit(server, server.stop())


@pytest.fixture(scope="module")
def utts(librispeech):
    from whisperopt.data import load_dataset

    return load_dataset("librispeech:test-clean").limit(8).utterances


@pytest.fixture(scope="module")
def long_talk(utts, tmp_path_factory) -> Path:
    """About 3 minutes of speech as MP3: long-form, decoded for several seconds."""
    import soundfile as sf

    parts = [p for u in utts for p in (u.load(), np.zeros(SR // 2, dtype=np.float32))]
    audio = np.tile(np.concatenate(parts), 4)[:180 * SR]
    path = tmp_path_factory.mktemp("talk") / "talk.mp3"
    sf.write(path, audio, SR, format="MP3")
    return path


def _mp3(audio: np.ndarray, rate: int) -> bytes:
    """``audio`` (16 kHz) resampled to ``rate`` and encoded as a bare MP3 stream (no ID3 or Xing header)."""
    import av

    x = np.interp(np.arange(int(len(audio) * rate / SR)) * SR / rate, np.arange(len(audio)), audio)
    out = io.BytesIO()
    with av.open(out, "w", format="mp3", options={"write_xing": "0", "id3v2_version": "0"}) as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        size = stream.codec_context.frame_size or 1152
        for i in range(0, len(x), size):
            frame = av.AudioFrame.from_ndarray(x[i:i + size].astype(np.float32)[None], format="flt", layout="mono")
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


# --- the key: fail closed ---

@pytest.mark.parametrize("args, env, message", [
    (["--api-key", ""], {}, "--api-key is empty (an unset variable in --api-key \"$KEY\"?)"),
    (["--api-key", "   "], {}, "--api-key is empty"),
    ([], {"WHISPEROPT_API_KEY": ""}, "$WHISPEROPT_API_KEY is empty: give the key, or --no-auth"),
    (["--api-key-file", "EMPTY"], {}, "is empty: give the key"),
    (["--api-key-file", "MISSING"], {}, "no such file or directory"),
    (["--api-key", "caf\u00e9"], {}, "--api-key must be printable ASCII"),
    (["--api-key", "k", "--no-auth"], {}, "--no-auth and an API key contradict each other"),
    (["--host", "0.0.0.0"], {}, "--host 0.0.0.0 is reachable from other machines and no API key is set"),
])
def test_a_missing_or_empty_key_is_refused(tmp_path, monkeypatch, capsys, args, env, message):
    (tmp_path / "EMPTY").write_text("\n  \n")
    monkeypatch.delenv("WHISPEROPT_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = [str(tmp_path / a) if a in ("EMPTY", "MISSING") else a for a in args]
    code = main(["serve", "--model", "synthetic:tiny", "--port", "0", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_no_auth_on_a_public_address_is_allowed_and_said(tmp_path):
    from whisperopt.serve.server import bind, check_exposure
    from whisperopt.serve.settings import ServeSettings

    sock = bind("0.0.0.0", 0)
    try:
        said = check_exposure(ServeSettings(model_id="m", no_auth=True), "0.0.0.0", sock)
    finally:
        sock.close()
    assert said == "no API key (--no-auth): anyone who reaches this port can use it"
    with pytest.raises(WhisperoptError, match="--no-auth and an API key"):
        ServeSettings(model_id="m", api_key="k", no_auth=True).check()


def test_docs_on_request_are_behind_the_key(guarded):
    for path in ("/docs", "/redoc", "/openapi.json"):
        without = httpx.get(f"{guarded.url}{path}", timeout=30)
        assert without.status_code == 401 and without.json()["error"]["code"] == "invalid_api_key", path
        with_key = httpx.get(f"{guarded.url}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert with_key.status_code == 200, path
    schema = httpx.get(f"{guarded.url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert "/v1/audio/transcriptions" in schema["paths"]
    assert guarded.log.read_text().splitlines()[0].endswith("API key required, docs on)")


# --- uploads: deadline, the queue bound counts them, disconnects free their place and file ---

@pytest.mark.slow
def test_stalled_uploads_hold_the_queue_until_their_deadline(guarded, utts):
    audio = Path(utts[0].audio).read_bytes()
    t0 = time.monotonic()
    stalled = [_upload(guarded, audio, cut=2000) for _ in range(2)]
    health = _until(guarded, lambda h: h["queue"]["receiving"] == 2)
    assert health["queue"]["depth"] == 2
    third = _post(guarded, audio)  # refused before its upload is read
    assert third.status_code == 503 and third.json()["error"]["code"] == "queue_full", third.text
    for sock in stalled:
        status, body = _answer(sock)
        assert status == 408, body
        err = json.loads(body)["error"]
        assert err["code"] == "upload_timeout" and f"within {UPLOAD_TIMEOUT} s (--upload-timeout)" in err["message"]
    assert UPLOAD_TIMEOUT <= time.monotonic() - t0 < UPLOAD_TIMEOUT + 10
    assert guarded.health()["queue"]["depth"] == 0


@pytest.mark.slow
def test_a_client_that_hangs_up_frees_its_place_and_file_at_once(guarded, long_talk):
    """The issue's row: the engine busy with long audio, more long uploads whose clients leave. The bound holds (one
    waits, the rest are refused), and the one that waited leaves the queue and the temp dir as its client goes."""
    audio = long_talk.read_bytes()
    busy = _upload(guarded, audio)
    _until(guarded, lambda h: h["queue"]["running"] == 1)
    waiting = _upload(guarded, audio)
    _until(guarded, lambda h: h["queue"]["waiting"] == 1)
    assert len(_temp_files(guarded)) == 2
    refused = [_post(guarded, audio, "talk.mp3") for _ in range(5)]
    assert all(r.status_code == 503 and r.json()["error"]["code"] == "queue_full" for r in refused)
    waiting.close()
    t0 = time.monotonic()
    health = _until(guarded, lambda h: h["queue"]["waiting"] == 0 and h["queue"]["depth"] == 1, timeout=5)
    assert time.monotonic() - t0 < 2 and health["queue"]["running"] == 1  # before the busy request is done
    assert len(_temp_files(guarded)) == 1  # only the busy request's
    status, body = _answer(busy)
    assert status == 200 and len(json.loads(body)["text"].split()) > 200, body
    idle = {"depth": 0, "receiving": 0, "waiting": 0, "running": 0, "max": 2}
    _until(guarded, lambda h: h["queue"] == idle, timeout=10)  # (the engine thread marks itself idle just after)
    assert not _temp_files(guarded)


# --- bad audio: a 400 with the CLI's message; an MP3 that changes rate mid-file decodes ---

def test_undecodable_audio_is_a_400_with_the_clis_message(guarded, long_talk, tmp_path, capsys):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(long_talk.read_bytes()[:3000] + b"\xff" * 50 + b"garbage" * 400)
    response = _post(guarded, bad.read_bytes(), "bad.mp3")
    assert response.status_code == 400, response.text
    err = response.json()["error"]
    assert err["code"] == "invalid_audio" and err["param"] == "file"
    code = main(["transcribe", str(bad), "--model", "tiny.en", "--recipe", "ct2-int8", "-o", str(tmp_path / "out")])
    cli = capsys.readouterr().err.splitlines()[0]
    assert code != 0 and cli == f"whisperopt: error: {bad}: {err['message'].replace('bad.mp3', str(bad))}", cli
    assert err["message"] == "corrupt or truncated audio bad.mp3: Invalid data found when processing input"


def test_an_mp3_whose_sample_rate_changes_mid_file_is_transcribed(guarded, utts, tmp_path):
    from whisperopt.data.audio import load_audio
    from whisperopt.data.stream import stream_audio

    speech = utts[0].load()
    half = len(speech) // 2
    path = tmp_path / "joined.mp3"
    path.write_bytes(_mp3(speech[:half], 44100) + _mp3(speech[half:], 22050))
    import av

    with av.open(str(path)) as container:
        rates = {frame.sample_rate for frame in container.decode(audio=0)}
    assert rates == {44100, 22050}
    decoded = load_audio(path)
    assert abs(len(decoded) - len(speech)) < 0.2 * SR
    assert sum(len(b) for b in stream_audio(path)) == len(decoded)
    response = _post(guarded, path.read_bytes(), "joined.mp3")
    assert response.status_code == 200, response.text
    assert wer(utts[0].text, response.json()["text"]) <= 0.25, response.text


# --- SIGTERM: graceful stop ---

@pytest.mark.slow
def test_sigterm_finishes_or_refuses_in_flight_requests_and_exits_0(tmp_path_factory, tiny_en, utts, long_talk):
    """A clip being decoded finishes within the grace (200); the long request after it is stopped between two
    windows, the one waiting behind it and an upload still arriving are answered 503 in OpenAI's JSON; exit 0, no
    abort, no temporary file."""
    server = _start(tmp_path_factory, "sigterm", "--grace", "3")
    try:
        clip = _upload(server, Path(utts[1].audio).read_bytes())
        _until(server, lambda h: h["queue"]["running"] == 1)
        audio = long_talk.read_bytes()
        long_ = _upload(server, audio)
        waiting = _upload(server, audio)
        arriving = _upload(server, audio, cut=len(audio) // 2)
        _until(server, lambda h: h["queue"]["depth"] == 4 and h["queue"]["receiving"] == 1)
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(60)
        took = time.monotonic() - t0
    finally:
        server.stop()
    status, body = _answer(clip)
    assert status == 200 and wer(utts[1].text, json.loads(body)["text"]) <= 0.25, body
    for sock in (long_, waiting, arriving):
        status, body = _answer(sock)
        assert status == 503, body
        err = json.loads(body)["error"]
        assert err["code"] == "shutting_down" and err["type"] == "server_error" and err["message"], err
    assert 3 <= took < 3 + 30, took
    _clean_exit(server, code)
    log = server.log.read_text()
    assert "stopping; requests in flight have 3 s to finish (--grace)" in log and "whisperopt serve: stopped" in log
