"""Transcript writers against exact expected files, and streaming audio decoding of generated containers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from whisperopt.data.stream import stream_audio
from whisperopt.errors import WhisperoptError
from whisperopt.transcribe.result import Segment, TranscriptResult
from whisperopt.transcribe.writers import parse_formats, write_outputs


@pytest.fixture()
def result():
    return TranscriptResult(
        segments=[Segment(0.0, 2.5, " Hello world.", [1, 2], -0.2, 0.01),
                  Segment(2.5, 3661.25, " Second --> line", [3], -0.3, 0.02),
                  Segment(3661.0, 3662.0, "  ", [], None, None)],
        language="en", language_probability=0.98, duration=3662.0)


def test_writers_exact(tmp_path, result):
    paths = write_outputs(result, "a", tmp_path, parse_formats("all"))
    assert [p.suffix for p in paths] == [".txt", ".srt", ".vtt", ".json", ".tsv"]
    assert (tmp_path / "a.txt").read_text() == "Hello world.\nSecond -> line\n"
    assert (tmp_path / "a.srt").read_text() == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello world.\n\n"
        "2\n00:00:02,500 --> 01:01:01,250\nSecond -> line\n\n")
    assert (tmp_path / "a.vtt").read_text() == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello world.\n\n"
        "00:00:02.500 --> 01:01:01.250\nSecond -> line\n\n")
    assert (tmp_path / "a.tsv").read_text() == "start\tend\ttext\n0\t2500\tHello world.\n2500\t3661250\tSecond -> line\n"
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["text"] == "Hello world. Second --> line" and data["language"] == "en"
    assert len(data["segments"]) == 3 and data["segments"][0]["tokens"] == [1, 2]
    assert not list(tmp_path.glob(".*tmp"))


def test_cues_are_monotonic(tmp_path):
    r = TranscriptResult([Segment(5.0, 6.0, "a"), Segment(4.0, 4.5, "b"), Segment(7.0, 7.0, "c")])
    srt = write_outputs(r, "m", tmp_path, ["srt"])[0].read_text()
    assert "00:00:06,000 --> 00:00:06,001\nb" in srt and "00:00:07,000 --> 00:00:07,001\nc" in srt


def test_bad_formats_and_dirs(tmp_path, result):
    with pytest.raises(WhisperoptError, match="unknown output format"):
        parse_formats("txt,docx")
    (tmp_path / "f").write_text("x")
    with pytest.raises(WhisperoptError, match="not writable"):
        write_outputs(result, "a", tmp_path / "f" / "sub", ["txt"])


def _write(path, codec, rate, channels, seconds, fmt=None):
    import av

    t = np.arange(int(rate * seconds)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo" if channels == 2 else "mono")
        data = np.tile(tone, (channels, 1))
        fr_fmt = "fltp" if codec not in ("pcm_s16le", "flac") else "s16p"
        if fr_fmt == "s16p":
            data = (data * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(data, format=fr_fmt, layout="stereo" if channels == 2 else "mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize("name,codec,rate,channels,fmt", [
    ("a.wav", "pcm_s16le", 8000, 1, None),
    ("b.flac", "flac", 44100, 2, None),
    ("c.mp3", "libmp3lame", 44100, 2, None),
    ("d.ogg", "libopus", 48000, 1, "ogg"),
    ("e.m4a", "aac", 22050, 2, "mp4"),
])
def test_stream_any_container(tmp_path, name, codec, rate, channels, fmt):
    path = tmp_path / name
    _write(path, codec, rate, channels, 3.0, fmt)
    blocks = list(stream_audio(path, block_seconds=1.0))
    total = sum(len(b) for b in blocks)
    assert abs(total - 48000) < 16000 * 0.1  # encoders pad a little
    assert all(len(b) == 16000 for b in blocks[:-1]) and all(b.dtype == np.float32 for b in blocks)
    audio = np.concatenate(blocks)
    spectrum = np.abs(np.fft.rfft(audio[4000:36000]))
    assert abs(np.argmax(spectrum) * 16000 / 32000 - 440) < 5


def test_stream_bad_input(tmp_path):
    with pytest.raises(WhisperoptError, match="not found"):
        list(stream_audio(tmp_path / "missing.mp3"))
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(WhisperoptError, match="empty audio"):
        list(stream_audio(tmp_path / "empty.mp3"))
    (tmp_path / "x.mp3").write_text("not audio " * 100)
    with pytest.raises(WhisperoptError, match="cannot decode|corrupt|no audio"):
        list(stream_audio(tmp_path / "x.mp3"))
    _write(tmp_path / "t.flac", "flac", 16000, 1, 5.0)
    data = (tmp_path / "t.flac").read_bytes()
    (tmp_path / "trunc.flac").write_bytes(data[: len(data) // 3])
    with pytest.raises(WhisperoptError, match="corrupt or truncated"):
        list(stream_audio(tmp_path / "trunc.flac"))
