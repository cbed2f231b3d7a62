"""--vad-filter: Silero VAD (faster-whisper's module) on a made-up long-form file — three test-clean utterances with
15 s of digital silence and 15 s of noise between them — decoded by the trained tiny.en on CTranslate2 int8: no words
in the non-speech stretches, segment starts at the utterances' starts, chunks within --vad-max-chunk-s, streamed
detection equal to whole-file detection, an all-silence file, one-line errors (bad values, faster-whisper missing)."""

from __future__ import annotations

import json
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from whisperopt.cli import main
from whisperopt.errors import WhisperoptError
from whisperopt.metrics.wer import corpus_rate, utterance_errors
from whisperopt.serve.settings import ServeSettings
from whisperopt.transcribe import Segment, TranscribeOptions, Transcriber
from whisperopt.transcribe.vad import Chunk, SpeechChunks

SR = 16000
UTTERANCES = ("1089-134686-0000", "1089-134686-0001", "1089-134686-0002")
STRETCH_S = 15.0
FAST = dict(beam_size=1, temperature=(0.0,))
FAST_CLI = ["--beam-size", "1", "--temperature", "0", "--temperature-increment-on-fallback", "0", "--threads", "2"]


def _onset(x: np.ndarray) -> int:
    """Where an utterance's speech starts (LibriSpeech files open with a little room noise): the first 10-ms frame
    whose RMS reaches a tenth of the loudest frame's. Builds the test's ground truth only."""
    frames = x[:len(x) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    return int(np.argmax(rms >= 0.1 * rms.max())) * 160


@pytest.fixture(scope="module")
def made_up(librispeech):
    """(audio, speech onsets in s, non-speech stretches [(start, end, kind)] in s, reference text): utterance,
    15 s of digital silence, utterance, 15 s of noise (white, -32 dBFS RMS, and a 0.3-Hz swell), utterance, 5 s
    of silence."""
    from .conftest import TEST_CLEAN

    rng = np.random.default_rng(0)
    utts = [sf.read(str(TEST_CLEAN / "1089" / "134686" / f"{u}.flac"), dtype="float32")[0] for u in UTTERANCES]
    t = np.arange(int(STRETCH_S * SR)) / SR
    noise = (0.025 * rng.standard_normal(len(t)) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))).astype(np.float32)
    pieces = [(utts[0], None), (np.zeros(len(t), np.float32), "silence"), (utts[1], None), (noise, "noise"),
              (utts[2], None), (np.zeros(5 * SR, np.float32), "silence")]
    onsets, stretches, at = [], [], 0
    for x, kind in pieces:
        if kind is None:
            onsets.append((at + _onset(x)) / SR)
        else:
            stretches.append((at / SR, (at + len(x)) / SR, kind))
        at += len(x)
    trans = dict(line.split(" ", 1) for line in (TEST_CLEAN / "1089" / "134686" / "1089-134686.trans.txt")
                 .read_text().splitlines())
    return np.concatenate([x for x, _ in pieces]), onsets, stretches, " ".join(trans[u] for u in UTTERANCES)


def wer(reference: str, hypothesis: str) -> float:
    return corpus_rate([utterance_errors(reference, hypothesis)[0]])


def words_in_stretches(segments, stretches, margin: float = 0.5) -> list[str]:
    """Words whose time lies inside a stretch (less ``margin`` at each end): word timestamps where there are, else
    each segment's words spread evenly over it (how the long-form metric counts them)."""
    out = []
    for s in segments:
        if s.words:
            timed = [((w["start"] + w["end"]) / 2, w["word"]) for w in s.words]
        else:
            words = s.text.split()
            step = (s.end - s.start) / max(1, len(words))
            timed = [(s.start + (i + 0.5) * step, w) for i, w in enumerate(words)]
        out += [w for mid, w in timed for a, b, _ in stretches if a + margin <= mid <= b - margin]
    return out


# --- options and a missing faster-whisper: one line ---

@pytest.mark.parametrize("change, message", [
    (dict(vad_threshold=1.5), "--vad-threshold must be between 0.01 and 0.99, got 1.5"),
    (dict(vad_min_silence_ms=-1), "--vad-min-silence-ms must be between 0 and 60000, got -1"),
    (dict(vad_speech_pad_ms=9000), "--vad-speech-pad-ms must be between 0 and 5000, got 9000"),
    (dict(vad_min_speech_ms=-5), "--vad-min-speech-ms must be between 0 and 60000, got -5"),
    (dict(vad_max_chunk_s=31), "--vad-max-chunk-s must be between 1 and 30, got 31"),
    (dict(vad_max_chunk_s=0.5), "--vad-max-chunk-s must be between 1 and 30, got 0.5"),
    (dict(vad_max_chunk_s=2, vad_speech_pad_ms=1000), "leaves under half a second of speech"),
])
def test_bad_option_values_are_one_line(change, message):
    for holder in (TranscribeOptions(vad_filter=True, **change), ServeSettings("m", vad_filter=True, **change)):
        with pytest.raises(WhisperoptError) as exc:
            holder.check()
        assert message in str(exc.value) and "\n" not in str(exc.value)


def test_knobs_without_the_filter_are_refused():
    with pytest.raises(WhisperoptError, match=r"^--vad-threshold, --vad-max-chunk-s set without --vad-filter"):
        TranscribeOptions(vad_threshold=0.3, vad_max_chunk_s=10).check()
    TranscribeOptions().check()  # the defaults, without the filter: fine


def test_missing_faster_whisper_is_one_line_and_the_rest_runs(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # `import faster_whisper` raises ImportError
    with pytest.raises(WhisperoptError) as exc:
        TranscribeOptions(vad_filter=True).check()
    assert str(exc.value) == ("--vad-filter needs faster-whisper's Silero VAD (faster_whisper is missing): "
                              "pip install 'whisperopt[ct2]'")
    TranscribeOptions(mode="batched").check()  # everything else still works without it
    sf.write(str(tmp_path / "a.wav"), np.zeros(SR, np.float32), SR)
    code = main(["transcribe", str(tmp_path / "a.wav"), "--model", "synthetic:tiny", "--vad-filter", "-o",
                 str(tmp_path), *FAST_CLI])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [f"whisperopt: error: {exc.value}"]


# --- detection over a stream, chunks, the time map (real Silero, no Whisper) ---

def test_streamed_detection_matches_whole_file_and_bounds_chunks(made_up):
    audio, onsets, stretches, _ = made_up
    opts = TranscribeOptions(vad_filter=True, vad_max_chunk_s=5)
    whole = SpeechChunks([audio], opts)  # one span: get_speech_timestamps over the whole array
    whole_chunks = [c for c in whole if c.regions]
    blocks = (audio[i:i + 3 * SR] for i in range(0, len(audio), 3 * SR))
    streamed = SpeechChunks(blocks, opts, span_s=1)  # spans as short as allowed (4 chunks and margins, 28 s): 3
    streamed_chunks = [c for c in streamed if c.regions]
    masks = []
    for chunks in (whole_chunks, streamed_chunks):
        masks.append(np.zeros(len(audio), bool))
        for s, e in (r for c in chunks for r in c.regions):
            masks[-1][s:e] = True
    # the same speech, to a frame or two where a span starts mid-speech (Silero's state starts afresh there)
    assert (masks[0] != masks[1]).sum() <= 3 * 1024 and streamed.total == whole.total == len(audio)
    regions = [r for c in whole_chunks for r in c.regions]
    for a, b, _ in stretches:  # no region inside a stretch (the padding reaches at most 0.4 s into it)
        assert not [r for r in regions if r[1] > (a + 0.5) * SR and r[0] < (b - 0.5) * SR]
    for onset in onsets:  # every utterance found, padded before its onset
        assert any(s <= onset * SR < e for s, e in regions)
    for c in whole_chunks:  # a chunk's audio is its regions' samples, joined
        assert np.array_equal(c.audio, np.concatenate([audio[s:e] for s, e in c.regions]))
    assert all(len(c.audio) <= 5 * SR for c in whole_chunks) and len(whole_chunks) >= 4  # 20 s of speech
    small = TranscribeOptions(vad_filter=True, vad_max_chunk_s=2, vad_speech_pad_ms=200)
    small.check()
    small = [c for c in SpeechChunks([audio], small) if c.regions]
    assert all(len(c.audio) <= 2 * SR for c in small)  # Silero splits speech at pauses to fit, never truncates:
    assert sum(len(c.audio) for c in small) == sum(e - s for c in small for s, e in c.regions) >= 19 * SR
    assert [c for c in SpeechChunks([np.zeros(40 * SR, np.float32)], opts) if c.regions] == []


def test_a_region_longer_than_a_chunk_is_split_not_truncated(monkeypatch):
    """Should the detector ever give a region over --vad-max-chunk-s (it splits them itself), it is cut into equal
    parts: 70 s become three chunks of 23.3 s holding every sample."""
    from faster_whisper import vad

    monkeypatch.setattr(vad, "get_speech_timestamps", lambda audio, options: [{"start": 0, "end": len(audio)}])
    audio = np.random.default_rng(1).standard_normal(70 * SR).astype(np.float32)
    chunks = [c for c in SpeechChunks([audio], TranscribeOptions(vad_filter=True)) if c.regions]
    assert [c.regions for c in chunks] == [((0, 373333),), ((373333, 746667),), ((746667, 1120000),)]
    assert np.array_equal(np.concatenate([c.audio for c in chunks]), audio)


@pytest.mark.slow
def test_detection_memory_is_bounded_by_the_span(made_up):
    """Five, then twenty minutes of audio (utterances, silence, noise) through the detector in 60-s spans: what it
    allocates at once does not grow with the input, and stays below the 77 MB that twenty minutes of float32 are."""
    audio = made_up[0]
    opts = TranscribeOptions(vad_filter=True, vad_max_chunk_s=10)
    peaks = []
    for minutes in (5, 20):
        blocks = (audio[i:i + 30 * SR] for _ in range(minutes * 60 * SR // len(audio))
                  for i in range(0, len(audio), 30 * SR))
        tracemalloc.start()
        chunks = SpeechChunks(blocks, opts, span_s=60)
        found = sum(1 for c in chunks if c.regions)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
        assert found >= minutes - 1 and chunks.total >= (minutes - 1) * 60 * SR
    assert peaks[1] < 1.2 * peaks[0] + 2 and peaks[1] < 40, f"{peaks} MB traced for 5 and 20 minutes"


def test_times_go_back_to_the_input_time_line():
    # regions 1-3 s and 10-12 s of the input (7 s of silence left out between them), 0.4 s of padding at the join
    chunk = Chunk(((SR, 3 * SR), (10 * SR, 12 * SR)), np.zeros(4 * SR, np.float32), pad=int(0.4 * SR))
    words = [{"start": 0.5, "end": 0.9, "word": " a"}, {"start": 1.9, "end": 2.3, "word": " b"}]
    segs = [Segment(0.5, 2.4, "a b", words=words), Segment(1.0, 2.6, "c"), Segment(2.6, 3.5, "d"),
            Segment(1.8, 2.3, "e"), Segment(0.2, 0.4, "f"), Segment(1.0, 2.2, "g")]
    ab, c, d, e, f, g = chunk.restore(segs)
    assert [(w["start"], w["end"]) for w in ab.words] == [(1.5, 1.9), (2.9, 3.0)]  # b ran on across the gap
    assert (ab.start, ab.end) == (1.5, 3.0)  # a segment with words spans them
    assert (f.start, f.end) == (1.2, 1.4)  # in the first region: moved by its start
    assert (c.start, c.end) == (2.0, 3.0)  # ran on into d's start across the gap: ends where the region ends
    assert (d.start, d.end) == (10.6, 11.5)
    assert (e.start, e.end) == (10.0, 10.3)  # started in the padding before the gap: the next region
    assert (g.start, g.end) == (2.0, 3.0)  # ended in the padding after the gap: the region before


# --- trained tiny.en on CTranslate2 int8 ---

@pytest.fixture(scope="module")
def ct2(tiny_en):
    tr = Transcriber.load("tiny.en", "ct2-int8", threads=2)
    yield tr
    tr.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["batched", "sequential", "plain"])
def test_no_words_in_non_speech_and_starts_on_time(ct2, made_up, mode):
    audio, onsets, stretches, reference = made_up
    done = []
    segments, info = ct2.stream(audio, mode=mode, vad_filter=True, progress=done.append, **FAST)
    segments = list(segments)
    assert done == sorted(done) and done[-1] == len(audio) / SR  # the progress bar only moves forward, to the end
    assert words_in_stretches(segments, stretches) == []
    assert wer(reference, " ".join(s.text for s in segments)) < 0.25
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))
    assert info.vad["chunks"] >= 1 and info.vad["max_chunk_s"] == 30.0 and info.duration == len(audio) / SR
    speech = info.vad["speech_s"]
    assert sum(b - a for a, b, _ in stretches) * 0.9 < len(audio) / SR - speech  # the stretches were left out
    if mode != "plain":  # plain: one segment per chunk (here all the speech is one chunk)
        for onset in onsets:
            assert min(abs(s.start - onset) for s in segments) <= 0.5, (onset, [s.start for s in segments])


@pytest.mark.slow
def test_small_chunks_and_word_free_silence_from_the_library(ct2, made_up):
    """--vad-max-chunk-s 5: more chunks, none longer; the same words; batched like the bench's VAD-chunked mode."""
    audio, onsets, stretches, reference = made_up
    result = ct2.transcribe(audio, mode="batched", batch_size=4, vad_filter=True, vad_max_chunk_s=5, **FAST)
    assert result.vad["chunks"] >= 4 and words_in_stretches(result.segments, stretches) == []
    assert wer(reference, result.text) < 0.3


@pytest.mark.slow
def test_clips_with_vad_keep_their_own_time_line(ct2, made_up):
    """What serve decodes with --vad-filter: a clip with 4 s of silence first, and a clip of noise only."""
    audio, onsets = made_up[:2]
    start = int(onsets[0] * SR)
    clip = np.concatenate([np.zeros(4 * SR, np.float32), audio[start:start + 8 * SR]])
    a = next(a for a, _, kind in made_up[2] if kind == "noise")
    noise = audio[int((a + 2) * SR):int((a + 12) * SR)]
    speech, quiet = ct2.transcribe_clips([clip, noise], TranscribeOptions(vad_filter=True, **FAST))
    assert speech.segments and abs(speech.segments[0].start - 4.0) <= 0.5 and speech.segments[-1].end <= 12.0
    assert quiet.segments == [] and quiet.vad["speech_s"] == 0.0 and speech.vad["chunks"] == 1


@pytest.mark.slow
def test_cli_vad_filter_and_an_all_silence_file(tmp_path, capsys, made_up, ct2):
    audio, _, stretches, _ = made_up
    sf.write(str(tmp_path / "talk.flac"), audio, SR)
    sf.write(str(tmp_path / "quiet.wav"), np.zeros(20 * SR, np.float32), SR)
    code = main(["transcribe", str(tmp_path / "talk.flac"), str(tmp_path / "quiet.wav"), "--model", "tiny.en",
                 "--recipe", "ct2-int8", "--mode", "batched", "--vad-filter", "--vad-min-silence-ms", "300",
                 "-o", str(tmp_path / "out"), "-f", "json,txt", *FAST_CLI])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads((tmp_path / "out" / "talk.json").read_text())
    assert data["vad"]["min_silence_ms"] == 300 and data["vad"]["speech_s"] > 0
    assert words_in_stretches([Segment(s["start"], s["end"], s["text"]) for s in data["segments"]], stretches) == []
    assert (tmp_path / "out" / "quiet.txt").read_text() == ""
    quiet = json.loads((tmp_path / "out" / "quiet.json").read_text())
    assert quiet["segments"] == [] and quiet["vad"]["speech_s"] == 0 and quiet["vad"]["chunks"] == 0
    assert "VAD 0.0 s speech in 0 chunks" in out


@pytest.mark.slow
def test_serve_applies_the_vad_to_every_request(tmp_path, made_up, ct2):
    """`serve --vad-filter` with the official client: the long made-up file (streamed) and a short clip (batched
    path) both decoded from their speech only, times on each upload's own time line."""
    import openai

    from whisperopt.serve.process import ServerProcess

    audio, onsets, stretches, reference = made_up
    sf.write(str(tmp_path / "talk.flac"), audio, SR)
    start = int(onsets[1] * SR) - SR // 2
    sf.write(str(tmp_path / "clip.wav"), np.concatenate([np.zeros(5 * SR, np.float32), audio[start:start + 4 * SR]]),
             SR)
    server = ServerProcess(["--threads", "2", "--log-level", "warning", "--model", "tiny.en", "--recipe", "ct2-int8",
                            "--vad-filter", "--vad-speech-pad-ms", "300"], tmp_path / "serve.log",
                           env={"HF_HUB_OFFLINE": "1"})
    server.env.pop("WHISPEROPT_API_KEY", None)
    server.start()
    try:
        assert "VAD filter" in server.log.read_text().splitlines()[0]
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=300)
        with open(tmp_path / "talk.flac", "rb") as f:
            long = client.audio.transcriptions.create(model="tiny.en", file=f, response_format="verbose_json")
        segments = [Segment(s.start, s.end, s.text) for s in long.segments]
        assert words_in_stretches(segments, stretches) == [] and wer(reference, long.text) < 0.25
        with open(tmp_path / "clip.wav", "rb") as f:
            clip = client.audio.transcriptions.create(model="tiny.en", file=f, response_format="verbose_json")
        assert clip.segments and abs(clip.segments[0].start - 5.5) <= 0.5, clip.segments
    finally:
        assert server.stop() == 0, server.tail()


@pytest.mark.slow
def test_word_timestamps_stay_out_of_the_left_out_silence(made_up, tiny_en):
    """torch-fp32 word timestamps (cross-attention alignment) on one chunk holding two utterances 15 s of noise
    apart: the word before the gap ran on into the silence after it on the joined audio; on the input's time line no
    word and no segment spans the noise."""
    audio, onsets, stretches, _ = made_up
    a, b, _ = next(s for s in stretches if s[2] == "noise")
    part = audio[int((a - 5) * SR):int((b + 6) * SR)]  # the end of one utterance, the noise, the next one
    tr = Transcriber.load("tiny.en", "torch-fp32", threads=2)
    try:
        result = tr.transcribe(part, mode="batched", vad_filter=True, word_timestamps=True, **FAST)
    finally:
        tr.close()
    assert result.vad["chunks"] == 1 and len(result.segments) >= 2
    gap = (5 + 0.5, 5 + b - a - 0.5)  # the noise on the part's time line, less half a second each side
    for seg in result.segments:
        assert seg.end <= gap[0] or seg.start >= gap[1], (seg.start, seg.end, seg.text)
        assert all(w["end"] <= gap[0] or w["start"] >= gap[1] for w in seg.words), seg.words
        assert seg.start <= seg.words[0]["start"] and seg.words[-1]["end"] <= seg.end
