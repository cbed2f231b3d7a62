"""--pack: the window planner and the timestamp splitter (pure, hand-made token sequences), the Transcriber's packed
decode on a scripted runtime, one-line errors, and real tiny.en end to end (transcribe and the bench's packed pass)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import soundfile as sf

from whisperopt.cli import main
from whisperopt.errors import WhisperoptError
from whisperopt.recipes.base import DecodeOptions, Runtime, Transcription, WindowResult
from whisperopt.transcribe import TranscribeOptions, Transcriber, Vocabulary
from whisperopt.transcribe.packing import check_gap, gap_samples, plan_windows

SR = 16000
# tiny.en's special tokens (English-only: no language tokens, timestamps from 50363)
VOCAB = Vocabulary(eot=50256, sot=50257, sot_prev=50360, no_timestamps=50362, timestamp_begin=50363,
                   languages=("en",), multilingual=False)
SHORT = ["1089-134686-0001", "1089-134686-0002", "1089-134686-0003", "1089-134686-0004"]  # 3.3, 6.6, 2.7, 5.2 s


def ts(seconds: float, vocab: Vocabulary = VOCAB) -> int:
    return vocab.timestamp_begin + round(seconds / 0.02)


def s(seconds: float) -> int:
    return round(seconds * SR)


# --- the planner ---

def test_plan_first_fit_in_input_order():
    lengths = [s(x) for x in (5, 8, 6, 20, 3, 29.5, 31)]
    plan = plan_windows(lengths, s(1))
    assert [w.members for w in plan] == [(0, 1, 2, 4), (3,), (5,), (6,)]  # the 3-s clip fills the first window
    first = plan[0]
    assert first.starts == (0, s(6), s(15), s(22)) and first.packed and first.samples == s(26)
    assert not plan[1].packed and plan[1].samples == s(20)  # alone: the clip as it is, no gap
    assert plan[2].members == (5,) and plan[3].samples == s(31)  # 29.5 s + 1 s gap > 30 s: alone, as unpacked
    # a tail margin keeps the window's end free
    assert [w.members for w in plan_windows([s(12), s(12), s(3)], s(1))] == [(0, 1, 2)]
    assert [w.members for w in plan_windows([s(12), s(12), s(3)], s(1), tail=s(1))] == [(0, 1), (2,)]


def test_plan_invariants_on_random_lengths():
    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(0, s(35)) for _ in range(rng.randint(1, 30))]
        gap, tail = s(rng.choice([0.5, 1, 2])), s(rng.choice([0, 2]))
        plan = plan_windows(lengths, gap, tail=tail)
        members = [i for w in plan for i in w.members]
        assert sorted(members) == list(range(len(lengths)))  # every clip once: none split, none lost
        assert [w.members[0] for w in plan] == sorted(w.members[0] for w in plan)  # windows in input order
        for w in plan:
            assert list(w.members) == sorted(w.members) and w.lengths == tuple(lengths[i] for i in w.members)
            if w.packed:  # every clip with its gap, within 30 s less the tail margin
                assert w.samples + tail <= s(30)
                assert all(b == a + n + gap for a, n, b in zip(w.starts, w.lengths, w.starts[1:]))
            else:
                assert w.starts == (0,)


def test_window_audio_and_gap_grid():
    clips = [np.full(s(2), 0.5, np.float32), np.full(s(3), -0.25, np.float32)]
    w, = plan_windows([len(c) for c in clips], gap_samples(1.0))
    a = w.audio(clips)
    assert len(a) == s(7) and (a[:s(2)] == 0.5).all() and (a[s(2):s(3)] == 0).all()
    assert (a[s(3):s(6)] == -0.25).all() and (a[s(6):] == 0).all()
    assert gap_samples(1.0) == 16000 and gap_samples(0.51) == 8320  # on the 0.02-s timestamp grid
    for bad in (0, 0.01, 11, float("nan")):
        with pytest.raises(WhisperoptError, match="--pack-gap must be between"):
            check_gap(bad)


# --- the splitter: a 3-clip window, 5 s / 8 s / 6 s clips at 0, 6 and 15 s, 1-s gaps (22 s) ---

WINDOW = plan_windows([s(5), s(8), s(6)], s(1))[0]


def pieces(tokens):
    return [p if isinstance(p, str) else [(round(x.start, 2), round(x.end, 2), VOCAB.text_tokens(x.tokens)) for x in p]
            for p in WINDOW.split(tokens, VOCAB)]


def test_split_by_start_timestamp_relative_to_each_clip():
    assert WINDOW.starts == (0, s(6), s(15))
    tokens = [ts(0), 10, ts(2.4), ts(2.4), 11, ts(5.6),  # the end drifts past the clip, into the gap
              ts(5.7), 20, ts(10), ts(10), 21, 22, ts(14.8),  # starts in the gap: the next clip's; ends past it
              ts(15.2), 30, ts(20.8)]  # a single timestamp at the end: the window is complete
    assert pieces(tokens) == [[(0.0, 2.4, [10]), (2.4, 5.0, [11])],  # times clamped to the clip's 5 s
                              [(0.0, 4.0, [20]), (4.0, 8.0, [21, 22])],
                              [(0.2, 5.8, [30])]]


def test_split_last_segment_without_closing_timestamp():
    tokens = [ts(0), 10, ts(4.8), ts(6.2), 20, ts(13.6), ts(15.1), 30, 31]  # no closing timestamp: to the window's end
    assert pieces(tokens)[2] == [(0.1, 6.0, [30, 31])]


def test_split_sends_untrusted_clips_back_alone():
    # the window stops on a timestamp pair at 17 s: the last clip (15-21 s) was left for a next window
    unfinished = [ts(0), 10, ts(4.8), ts(6.2), 20, ts(13.6), ts(15.1), 30, ts(17), ts(17)]
    assert pieces(unfinished)[:2] == [[(0.0, 4.8, [10])], [(0.2, 7.6, [20])]] and pieces(unfinished)[2] == "unfinished"
    # Whisper ran the second clip's first words into the first clip's last segment (3-9 s): both are decoded again
    merged = [ts(0), 10, ts(3), ts(3), 11, 20, ts(9), ts(9.5), 21, ts(14), ts(15.2), 30, ts(20.8)]
    assert pieces(merged)[:2] == ["late start", "late start"] and pieces(merged)[2] == [(0.2, 5.8, [30])]
    skipped = [ts(0), 10, ts(4.8), ts(15.2), 30, ts(20.8)]  # the middle clip has no text
    assert pieces(skipped)[1] == "no text" and pieces(skipped)[0] == [(0.0, 4.8, [10])]
    assert pieces([10, 11, 12]) == ["no timestamps"] * 3 and pieces([ts(0), 10, 11]) == ["no timestamps"] * 3


def test_split_of_a_single_clip_is_the_long_form_parser():
    alone = plan_windows([s(5)], s(1))[0]
    out, = alone.split([ts(0), 10, ts(2), ts(2), 11, ts(4.9)], VOCAB)
    assert [(x.start, x.end) for x in out] == [(0.0, 2.0), (2.0, 4.9)]


# --- the Transcriber's packed decode, on a scripted runtime ---

class Scripted(Runtime):
    """Emits one segment per non-silent run of the window, with exact timestamps; in a window of three clips or more
    it stops on a timestamp pair after the second (as Whisper leaves the rest of a window for the next)."""

    long_form_unsupported = None

    def __init__(self, vocab):
        self.vocab, self.calls = vocab, []

    def transcribe(self, audios, options, forced_lengths=None):
        return [Transcription("", []) for _ in audios]

    def decode_windows(self, audios, options):
        self.calls.append([len(a) for a in audios])
        out = []
        for a in audios:
            on = np.flatnonzero(a)
            cuts = np.flatnonzero(np.diff(on) > 1) + 1
            runs = [(r[0] / SR, (r[-1] + 1) / SR) for r in np.split(on, cuts)]
            tokens = []
            for k, (a0, a1) in enumerate(runs):
                tokens += [ts(a0, self.vocab), 1000 + round(10 * a0), ts(a1, self.vocab)]
                if k == 1 and len(runs) > 2:
                    tokens.append(ts(a1, self.vocab))  # unfinished
                    break
            out.append(WindowResult(tokens, -0.1, 0.01))
        return out


def test_transcribe_clips_packed_and_redecoded(tiny_model):
    vocab = Vocabulary.from_model_dir(tiny_model.path)
    rt = Scripted(vocab)
    tr = Transcriber(rt, tiny_model.path)
    clips = [np.full(s(x), 0.1, np.float32) for x in (3, 4, 5)]
    results = tr.transcribe_clips(clips, TranscribeOptions(language="en", pack=True, temperature=(0.0,)))
    assert rt.calls == [[s(15)], [s(5)]]  # one packed window (3 + 1 + 4 + 1 + 5 + 1 s), then the third clip alone
    assert [[(g.start, g.end, vocab.text_tokens(g.tokens)) for g in r.segments] for r in results] == \
        [[(0.0, 3.0, [1000])], [(0.0, 4.0, [1040])], [(0.0, 5.0, [1000])]]
    assert dict(tr.packing) == {"clips": 3, "windows": 1, "packed": 3, "alone": 1, "alone: unfinished": 1}
    unpacked = tr.transcribe_clips(clips, TranscribeOptions(language="en", temperature=(0.0,)))
    assert [[(g.start, g.end) for g in r.segments] for r in unpacked] == [[(0.0, 3.0)], [(0.0, 4.0)], [(0.0, 5.0)]]

    class TextOnly(Scripted):
        long_form_unsupported = Runtime.long_form_unsupported

    with pytest.raises(WhisperoptError, match="recipe sherpa-int8 cannot --pack .*returns text only"):
        Transcriber(TextOnly(vocab), tiny_model.path, recipe="sherpa-int8").transcribe_clips(clips, pack=True)


def test_serve_pack_batches_into_packed_windows(tiny_model):
    from dataclasses import replace

    from whisperopt.serve.app import ServeSettings, create_app
    from whisperopt.serve.batcher import QueuedRequest

    vocab = Vocabulary.from_model_dir(tiny_model.path)
    rt = Scripted(vocab)
    service = create_app(Transcriber(rt, tiny_model.path), ServeSettings(model_id="m", pack=True)).state.service
    options = replace(service.base, language="en", temperature=(0.0,))
    assert options.pack and options.pack_gap == 1.0
    futures = [service.batcher.submit(QueuedRequest(np.full(s(x), 0.1, np.float32), options)) for x in (3, 4, 5)]
    service.batcher.start()  # the three clips wait together: one batch, one packed window and the third alone
    try:
        texts = [[vocab.text_tokens(g.tokens) for g in f.result(timeout=60).segments] for f in futures]
    finally:
        service.batcher.close()
    assert rt.calls == [[s(15)], [s(5)]] and texts == [[[1000]], [[1040]], [[1000]]]

    class TextOnly(Scripted):
        long_form_unsupported = Runtime.long_form_unsupported

    with pytest.raises(WhisperoptError, match="cannot --pack"):
        create_app(Transcriber(TextOnly(vocab), tiny_model.path), ServeSettings(model_id="m", pack=True))


@pytest.mark.parametrize("argv, message", [
    (["--pack", "--mode", "plain"], "--pack splits windows by their timestamp tokens: it cannot run with --mode plain"),
    (["--pack", "--without-timestamps"], "cannot run with --without-timestamps"),
    (["--pack", "--pack-gap", "0"], "--pack-gap must be between 0.02 and 10 seconds"),
    (["--pack", "--ray"], "--pack joins short inputs into windows on this machine; it cannot run with --ray"),
])
def test_transcribe_pack_bad_flags(tmp_path, capsys, argv, message):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(SR, np.float32), SR)
    assert main(["transcribe", str(wav), "--model", "synthetic:tiny", "-o", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_pack_gap_bad(tmp_path, capsys):
    assert main(["bench", "--model", "synthetic:tiny", "--recipes", "torch-fp32", "--pack", "--pack-gap", "50",
                 "--out", str(tmp_path / "res")]) == 2
    assert "--pack-gap must be between" in capsys.readouterr().err and not (tmp_path / "res").exists()


# --- real tiny.en ---

@pytest.mark.slow
def test_transcribe_pack_matches_unpacked(tiny_en, librispeech, tmp_path, capsys):
    """Four short test-clean utterances (18 s) through `transcribe --pack`: one packed window, each input's files with
    times inside its own duration, and words within a WER bound of the unpacked transcripts."""
    from whisperopt.metrics.wer import corpus_rate, utterance_errors

    files = [next((librispeech / "LibriSpeech" / "test-clean").rglob(f"{i}.flac")) for i in SHORT]
    out = tmp_path / "out"
    assert main(["transcribe", *map(str, files), "--model", "tiny.en", "--pack", "--beam-size", "1", "--threads",
                 "2", "-o", str(out), "-f", "txt,json"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(packed: 4 inputs in ") == 4, printed
    tr = Transcriber.load("tiny.en", threads=2)
    try:
        counts = []
        for f in files:
            audio = sf.read(str(f), dtype="float32")[0]
            doc = json.loads((out / f"{f.stem}.json").read_text())
            starts = [g["start"] for g in doc["segments"]]
            assert doc["segments"] and starts == sorted(starts) and starts[0] >= 0
            assert all(g["end"] <= len(audio) / SR + 1e-3 for g in doc["segments"])
            unpacked = tr.runtime.transcribe([audio], DecodeOptions())[0].text
            counts.append(utterance_errors(unpacked, (out / f"{f.stem}.txt").read_text())[0])
    finally:
        tr.close()
    assert corpus_rate(counts) <= 0.10, counts  # packed against unpacked words: close, not identical


@pytest.mark.slow
def test_bench_pack_reports_packed_pass(tiny_en, librispeech, tmp_path):
    out = tmp_path / "res"
    assert main(["bench", "--model", "tiny.en", "--recipes", "torch-fp32", "--limit", "3", "--pack", "--threads",
                 "2", "--warmup", "0", "--fidelity-utterances", "0", "--out", str(out)]) == 0
    row, = json.loads((out / "summary.json").read_text())["recipes"]
    p = row["packed"]
    assert p["gap_s"] == 1.0 and p["utterances"] == p["clips"] == 3 and p["windows"] == 1 and p["rtfx"] > 0
    assert p["paired_utterances"] == 3 and p["wer_unpacked"] == pytest.approx(row["wer"])
    assert p["wer_delta"] == pytest.approx(p["wer"] - p["wer_unpacked"]) and len(p["wer_delta_ci"]) == 2
    assert row["packed_gain"] == pytest.approx(p["rtfx"] / row["rtfx"]) and row["throughput"][0]["batch"] == 1
    md = (out / "summary.md").read_text()
    assert "| RTFx packed | packed gain | windows | ΔWER packed [95 % CI] |" in md and "1 s of silence" in md
    assert "packed_wer_delta_ci_lo" in (out / "summary.csv").read_text().splitlines()[0]
