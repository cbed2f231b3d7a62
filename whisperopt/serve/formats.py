"""OpenAI's audio response formats (json, text, srt, vtt, verbose_json) from a ``TranscriptResult``, and its error body
(``APIError``).

SRT and VTT come from the transcript writers (``transcribe.writers.render``), so the server's subtitles are the
CLI's: cues in whole milliseconds that never overlap or go backwards.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from ..transcribe import TranscriptResult
from ..transcribe.writers import render

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class APIError(Exception):
    """An answer other than 200, rendered as OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.status, self.param, self.code), self.status, self.headers)


def language_name(code: str | None) -> str | None:
    """OpenAI reports the language by name ("english"), as openai-whisper's tokenizer names them."""
    if code is None:
        return None
    from whisper.tokenizer import LANGUAGES

    return LANGUAGES.get(code, code)


def text_body(result: TranscriptResult, fmt: str) -> str:
    """The body of a text, srt or vtt response."""
    if fmt == "text":
        return result.text + "\n"
    return render(result, fmt)


def json_body(result: TranscriptResult, fmt: str, task: str, granularities: tuple[str, ...] = ()) -> dict:
    """The body of a json or verbose_json response.

    verbose_json has OpenAI's fields: task, language (a name), duration, text, ``segments`` (id, seek — the 10-ms
    frame the segment starts at —, start, end, text, tokens, temperature, avg_logprob, compression_ratio,
    no_speech_prob; scores are null for text-only engines) unless only word granularity was asked for, and
    ``words`` (word, start, end) when it was."""
    if fmt == "json":
        return {"text": result.text}
    body: dict = {"task": task, "language": language_name(result.language),
                  "duration": round(result.duration, 3), "text": result.text}
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {"id": i, "seek": round(s.start * 100), "start": s.start, "end": s.end, "text": s.text,
             "tokens": list(s.tokens), "temperature": s.temperature, "avg_logprob": s.avg_logprob,
             "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob}
            for i, s in enumerate(result.segments)]
    if "word" in granularities:
        body["words"] = [{"word": w["word"].strip(), "start": w["start"], "end": w["end"]}
                         for s in result.segments for w in (s.words or [])]
    return body
