"""Guards against made-up text (transcribe/guards.py): openai-whisper's hallucination_silence_threshold and the
repetition guard, on a scripted runtime (what the loop does with each decode) and their option checks."""

from __future__ import annotations

import pytest

from tests.test_transcribe import Scripted, tone, ts
from whisperopt.errors import WhisperoptError
from whisperopt.recipes.base import WindowResult
from whisperopt.transcribe import TranscribeOptions, Transcriber, Vocabulary
from whisperopt.transcribe.guards import cut_loops, find_loop, segment_anomaly, skip_hallucinations
from whisperopt.transcribe.result import Segment


@pytest.fixture(scope="module")
def vocab(tiny_model) -> Vocabulary:
    return Vocabulary.from_model_dir(tiny_model.path)


def words(*spans, p=0.9):
    return [{"start": a, "end": b, "word": f" w{i}", "probability": p} for i, (a, b) in enumerate(spans)]


def seg(start, end, spans, p=0.9, text=" x"):
    return Segment(start, end, text, [1], words=words(*spans, p=p))


def test_segment_anomaly_follows_openai_whisper():
    assert not segment_anomaly(seg(0, 2, [(0, 0.5), (0.5, 1.0), (1.0, 2.0)]))  # plausible words
    assert segment_anomaly(seg(0, 2, [(0, 0.5), (0.5, 1.0)], p=0.1))  # every word improbable
    assert segment_anomaly(seg(0, 9, [(0, 4.5), (4.5, 9.0)]))  # words lasting 4.5 s
    assert segment_anomaly(seg(0, 1, [(0, 0.01), (0.01, 0.02), (0.02, 0.03)]))  # 10-ms words
    assert not segment_anomaly(None) and not segment_anomaly(Segment(0, 1, " x", [1]))


def test_skip_hallucinations_drops_a_made_up_segment_in_silence():
    good = seg(0.5, 4.0, [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0)])
    made_up = seg(20.0, 22.0, [(20.0, 20.05), (20.05, 22.0)], p=0.05)
    # 16 s of silence before the made-up segment and nothing after it: dropped, the next window starts at it
    kept, seek = skip_hallucinations([good, made_up], 2.0, 0, 3000, 2200, True, 0.0, None)
    assert kept == [good] and seek == 2000
    # at the end of the input: the next window starts at the end, so nothing is decoded again
    kept, seek = skip_hallucinations([good, made_up], 2.0, 0, 3000, 2200, True, 0.0, 23.0)
    assert kept == [good] and seek == 2300
    # a made-up first segment after a leading silence longer than the threshold: the window is skipped up to it
    kept, seek = skip_hallucinations([made_up, good], 2.0, 0, 3000, 2200, True, 0.0, None)
    assert kept == [] and seek == 2000
    # plausible speech is kept; with more than the threshold left after its last word, the loop seeks there
    kept, seek = skip_hallucinations([good], 2.0, 0, 3000, 3000, False, 0.0, None)
    assert kept == [good] and seek == 400


def test_find_and_cut_loops():
    said = "and then I said no and then I said no and then I said no and then I said no to him".split()
    assert find_loop(said, 3) == (0, 5, 4) and find_loop(said, 5) is None
    assert find_loop("No, no, no, NO. Never.".split(), 4) == (0, 1, 4)
    cut = cut_loops([Segment(0, 5, " " + " ".join(said), [1]), Segment(5, 6, " fine", [2])], 3)
    assert [s.text for s in cut] == [" and then I said no and then I said no to him", " fine"]


def test_loop_falls_back_then_is_cut(vocab, tiny_model):
    loop = [ts(vocab, 0), *[262, 3797] * 8, ts(vocab, 4)]  # two words said 8 times
    said = Transcriber(Scripted(None), tiny_model.path)._text([262, 3797]).split()
    assert len(said) == 2

    def script(i, audio, opts):  # loops at T=0, fine at T=0.2
        return WindowResult(loop if opts.temperature == 0 else [ts(vocab, 0), 262, 3797, ts(vocab, 4)], -0.2, 0.01)

    rt = Scripted(script)
    res = Transcriber(rt, tiny_model.path).transcribe(tone(4), language="en", temperature=(0.0, 0.2), loop_repeats=4,
                                                      compression_ratio_threshold=None)
    assert [c[2].temperature for c in rt.calls] == [0.0, 0.2] and res.segments[0].text.split() == said
    rt = Scripted(lambda i, a, o: WindowResult(loop, -0.2, 0.01))  # loops at every temperature: cut to 3 sayings
    res = Transcriber(rt, tiny_model.path).transcribe(tone(4), language="en", temperature=(0.0, 0.2), loop_repeats=4,
                                                      compression_ratio_threshold=None)
    assert len(rt.calls) == 2 and res.segments[0].text.split() == said * 3
    res = Transcriber(Scripted(lambda i, a, o: WindowResult(loop, -0.2, 0.01)), tiny_model.path).transcribe(
        tone(4), language="en", temperature=(0.0,), compression_ratio_threshold=None)
    assert len(res.segments[0].text.split()) == 16  # off by default


def test_loop_guard_in_short_clips(vocab, tiny_model):
    """transcribe_clips (what serve's batcher runs): the same guard, each clip a window."""
    loop = [ts(vocab, 0), *[262, 3797] * 8, ts(vocab, 4)]
    said = Transcriber(Scripted(None), tiny_model.path)._text([262, 3797]).split()
    rt = Scripted(lambda i, a, o: WindowResult(loop, -0.2, 0.01))  # loops at every temperature
    results = Transcriber(rt, tiny_model.path).transcribe_clips([tone(4), tone(4)], language="en",
                                                                temperature=(0.0, 0.2), loop_repeats=4,
                                                                compression_ratio_threshold=None)
    assert [r.segments[0].text.split() for r in results] == [said * 3, said * 3]
    results = Transcriber(Scripted(lambda i, a, o: WindowResult(loop, -0.2, 0.01)), tiny_model.path).transcribe_clips(
        [tone(4)], language="en", temperature=(0.0,), compression_ratio_threshold=None)
    assert len(results[0].segments[0].text.split()) == 16  # off by default


def test_serve_takes_the_loop_guard():
    from whisperopt.serve.settings import ServeSettings

    ServeSettings(model_id="m", loop_repeats=4).check()
    with pytest.raises(WhisperoptError, match="--loop-repeats must be between 2 and 50, got 1"):
        ServeSettings(model_id="m", loop_repeats=1).check()


def test_hallucination_threshold_in_the_loop(vocab, tiny_model):
    def script(i, audio, opts):  # first window: real words 0-2 s, then improbable 10-ms words at 25 s
        if i:
            return WindowResult([ts(vocab, 0), 7751, ts(vocab, 1)], -0.2, 0.01, [0.0, 0.2, 1.0, 1.0], [0.9, 0.9, 0.9])
        toks = [ts(vocab, 0), 7751, 1002, ts(vocab, 2), ts(vocab, 25), 797, 797, 797, ts(vocab, 25.04)]
        times = [0.0, 0.5, 1.5, 2.0, 25.0, 25.0, 25.01, 25.02, 25.03, 25.04]
        return WindowResult(toks, -0.2, 0.01, times, [0.9, 0.9, 0.9, 0.9, 0.9, 0.05, 0.05, 0.05, 0.9])

    opts = dict(language="en", word_timestamps=True, temperature=(0.0,), compression_ratio_threshold=None)
    rt = Scripted(script)
    plain = Transcriber(rt, tiny_model.path).transcribe(tone(30), **opts)
    assert [s.text.strip() for s in plain.segments] == ["hello world", "again again again"] and len(rt.calls) == 1
    assert plain.segments[0].words[0]["probability"] == 0.9
    rt = Scripted(script)
    guarded = Transcriber(rt, tiny_model.path).transcribe(tone(30), hallucination_silence_threshold=2.0, **opts)
    # the made-up segment (23 s of silence before it) is dropped and the next window starts at it
    assert [(s.start, s.end, s.text.strip()) for s in guarded.segments] == [(0.0, 2.0, "hello world"),
                                                                           (25.0, 26.0, "hello")]
    assert [c[1] for c in rt.calls] == [480000, 80000]


@pytest.mark.parametrize("options, message", [
    (dict(hallucination_silence_threshold=2.0), "needs .* --word-timestamps"),
    (dict(hallucination_silence_threshold=2.0, word_timestamps=True, mode="batched"), "--mode sequential"),
    (dict(hallucination_silence_threshold=0.0, word_timestamps=True), "> 0"),
    (dict(loop_repeats=1), "--loop-repeats must be between 2 and 50, got 1"),
])
def test_guard_options_are_checked(options, message):
    with pytest.raises(WhisperoptError, match=message):
        TranscribeOptions(**options).check()
