"""Long-form datasets (data/longform.py, data/nonspeech.py) and long-form metrics (metrics/longform.py).

No engine runs here: the builder is checked on real LibriSpeech chapters (bytes, spans, stretches), the metrics on
hand-made segment lists whose answers are worked out in the comments.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import LIBRISPEECH, TEST_CLEAN
from whisperopt.data import load_dataset
from whisperopt.data import longform as lf
from whisperopt.data.datasets import is_test_data
from whisperopt.errors import WhisperoptError
from whisperopt.metrics.longform import (
    HypSegment,
    HypWord,
    LongformReference,
    SpokenSpan,
    Stretch,
    hyp_segments,
    repetition_loops,
    score_file,
    start_errors,
    summarise,
    words_in_stretches,
)

TRAIN_CLEAN_5 = LIBRISPEECH / "LibriSpeech" / "train-clean-5"
SR = 16000


@pytest.fixture(scope="module")
def chapter(librispeech) -> lf.Chapter:
    """The first 8 utterances of test-clean's 1089-134686 (7 junctions: room for all 6 stretches), to stay fast."""
    (full,) = lf.find_chapters(TEST_CLEAN)
    return dataclasses.replace(full, files=full.files[:8], ids=full.ids[:8], texts=full.texts[:8])


@pytest.fixture(scope="module")
def built(chapter, tmp_path_factory):
    """{variant: (reference, samples as int16)} of ``chapter``."""
    out = {}
    for variant in lf.VARIANTS:
        path = tmp_path_factory.mktemp(variant) / "a.flac"
        out[variant] = (lf.build_file(chapter, path, variant), sf.read(path, dtype="int16")[0], path)
    return out


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


# --- the builder --------------------------------------------------------------------------------------------------

def test_chapters_found_are_the_consecutive_runs(librispeech):
    (test_chapter,) = lf.find_chapters(TEST_CLEAN)  # 1089-134691 has 2 utterances here: too few to join
    assert test_chapter.name == "1089-134686"
    assert test_chapter.ids == tuple(f"1089-134686-{i:04d}" for i in range(38))
    names = [c.name for c in lf.find_chapters(TRAIN_CLEAN_5)]
    assert names == ["1088-134315", "1898-145715", "3526-176653", "6272-70171"]


def test_a_chapter_with_a_gap_gives_its_longest_run(tmp_path):
    folder = tmp_path / "7" / "9"
    folder.mkdir(parents=True)
    numbers = [*range(0, 5), *range(6, 6 + lf.MIN_CHAIN + 1)]  # 0-4, then a gap, then MIN_CHAIN + 1 in a row
    for i in numbers:
        sf.write(folder / f"7-9-{i:04d}.flac", np.zeros(1600, dtype=np.int16), SR, subtype="PCM_16")
    (folder / "7-9.trans.txt").write_text("".join(f"7-9-{i:04d} WORD {i}\n" for i in numbers))
    (ch,) = lf.find_chapters(tmp_path)
    assert ch.ids[0] == "7-9-0006" and len(ch.ids) == lf.MIN_CHAIN + 1


def test_builder_is_deterministic(chapter, built, tmp_path):
    for variant in lf.VARIANTS:
        ref, _, first = built[variant]
        again = lf.build_file(chapter, tmp_path / f"{variant}.flac", variant)
        assert (tmp_path / f"{variant}.flac").read_bytes() == first.read_bytes()
        assert again.to_dict() == ref.to_dict()


def test_plain_file_is_the_utterances_as_cut(chapter, built):
    ref, samples, _ = built["plain"]
    pos = 0
    for span, rel, text in zip(ref.utterances, chapter.files, chapter.texts):
        source, _ = sf.read(chapter.root / rel, dtype="int16")
        assert span.start == pos / SR and span.end == (pos + len(source)) / SR
        assert np.array_equal(samples[pos:pos + len(source)], source)  # sample for sample, nothing between
        assert span.start <= span.speech_start < span.speech_end <= span.end
        assert span.text == text
        pos += len(source)
    assert len(samples) == pos and ref.duration == pos / SR and ref.stretches == ()
    trans = (TEST_CLEAN / "1089" / "134686" / "1089-134686.trans.txt").read_text().splitlines()[:8]
    assert ref.text == " ".join(line.split(" ", 1)[1] for line in trans)


def _dbfs(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean((x / 32768.0) ** 2)) + 1e-12)


def test_hard_stretches_are_where_the_sidecar_says(chapter, built):
    plain, plain_samples, _ = built["plain"]
    ref, samples, _ = built["hard"]
    assert ref.text == plain.text and ref.seed is not None
    pieces = sorted([(u.start, u.end, "speech", u) for u in ref.utterances]
                    + [(s.start, s.end, s.kind, s) for s in ref.stretches])
    assert pieces[0][0] == 0 and pieces[-1][1] == ref.duration == len(samples) / SR
    assert pieces[0][2] == pieces[-1][2] == "speech"
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # they tile the file, no gap, no overlap
    assert all(a[2] == "speech" or b[2] == "speech" for a, b in zip(pieces, pieces[1:]))  # between utterances
    kinds = sorted((s.kind, s.duration > 15) for s in ref.stretches)
    assert kinds == [(k, long) for k in ("music", "noise", "silence") for long in (False, True)]
    for s in ref.stretches:
        assert 3 <= s.duration <= 10 or 20 <= s.duration <= 60
        inside = samples[round(s.start * SR):round(s.end * SR)]
        if s.kind == "silence":
            assert not inside.any()
        else:  # at its drawn level (the 50-ms fades take a little off)
            assert abs(_dbfs(inside) - s.detail["level_dbfs"]) < 1.0
    shift = 0
    for span, plain_span in zip(ref.utterances, plain.utterances):  # the speech around them is untouched
        a, b = round(span.start * SR), round(span.end * SR)
        assert np.array_equal(samples[a:b], plain_samples[round(plain_span.start * SR):round(plain_span.end * SR)])
        assert span.start - plain_span.start >= shift
        shift = span.start - plain_span.start
    assert shift > 0


def test_builder_key_follows_sources_and_builder(chapter, monkeypatch):
    key = lf.source_key([chapter], "plain")
    assert key != lf.source_key([chapter], "hard")
    shorter = dataclasses.replace(chapter, files=chapter.files[:7], ids=chapter.ids[:7], texts=chapter.texts[:7])
    assert key != lf.source_key([shorter], "plain")
    monkeypatch.setattr(lf, "BUILDER_VERSION", lf.BUILDER_VERSION + 1)
    assert key != lf.source_key([chapter], "plain")


def test_load_dataset_long_names(librispeech):
    ds = load_dataset("librispeech-long:test-clean")
    hard = load_dataset("librispeech-long:test-clean:hard")
    assert (ds.name, hard.name) == ("librispeech-long-test-clean", "librispeech-long-test-clean-hard")
    (u,), (h,) = ds.utterances, hard.utterances
    assert u.id == h.id == "1089-134686" and u.text == h.text == u.longform.text
    assert len(u.longform.utterances) == 38 and len(h.longform.stretches) == lf.STRETCHES
    assert h.longform.duration == pytest.approx(u.longform.duration + h.longform.stretch_seconds)
    assert sf.info(h.audio).frames == round(h.longform.duration * SR) and sf.info(h.audio).samplerate == SR
    assert load_dataset("librispeech-long:test-clean").utterances[0] == u  # built once, read back the same
    for spec, audio in (("librispeech-long:test-clean", u.audio), ("librispeech-long:test-clean:hard", h.audio)):
        assert is_test_data(spec) and is_test_data(audio)
    train = load_dataset("librispeech-long:train-clean-5")
    assert [x.id for x in train.utterances] == ["1088-134315", "1898-145715", "3526-176653", "6272-70171"]
    assert not is_test_data("librispeech-long:train-clean-5") and not is_test_data(train.utterances[0].audio)


@pytest.mark.slow
def test_train_clean_5_hard(librispeech):
    ds = load_dataset("librispeech-long:train-clean-5:hard")
    assert len(ds) == 4 and all(len(u.longform.stretches) == lf.STRETCHES for u in ds.utterances)


def test_long_dataset_errors_are_one_line(librispeech, monkeypatch):
    with pytest.raises(WhisperoptError) as exc:
        load_dataset("librispeech-long:test-cleen")
    assert "unknown LibriSpeech split 'test-cleen'" in _one_line(exc)
    for spec in ("librispeech-long:test-clean:loud", "librispeech-long:"):
        with pytest.raises(WhisperoptError) as exc:
            load_dataset(spec)
        assert "bad long-form dataset" in _one_line(exc)
    monkeypatch.setattr(lf, "find_librispeech_split", lambda split: None)
    with pytest.raises(WhisperoptError) as exc:
        load_dataset("librispeech-long:train-clean-5")
    assert "WHISPEROPT_LIBRISPEECH" in _one_line(exc)
    monkeypatch.undo()
    # dev-clean here: one chapter has 29 consecutive utterances, all digital silence (speaker 84)
    for _ in range(2):  # built once (an index with no file), then read back
        with pytest.raises(WhisperoptError) as exc:
            load_dataset("librispeech-long:dev-clean")
        assert "84-121123 (84-121123-0000 is digital silence)" in _one_line(exc)


def test_sidecar_round_trip_and_damage(built):
    ref = built["hard"][0]
    assert LongformReference.from_dict(ref.to_dict()) == ref
    with pytest.raises(WhisperoptError) as exc:
        LongformReference.from_dict({"name": "x"}, "x.json")
    assert _one_line(exc).startswith("x.json: not a long-form reference")
    bad = {**ref.to_dict(), "stretches": [{"kind": "applause", "start": 0, "end": 1}]}
    with pytest.raises(WhisperoptError, match="unknown stretch kind 'applause'"):
        LongformReference.from_dict(bad)


# --- the metrics on hand-made segments ----------------------------------------------------------------------------

def _ref(starts=(1.0, 5.0, 9.0, 20.0), stretches=(), texts=None) -> LongformReference:
    texts = texts or [f"word{i}" for i in range(len(starts))]
    spans = tuple(SpokenSpan(f"u{i}", s - 0.2, s + 2, s, s + 1.8, t) for i, (s, t) in enumerate(zip(starts, texts)))
    return LongformReference("f", 60.0, spans, tuple(Stretch(k, a, b) for k, a, b in stretches), "hard")


def test_words_in_stretches_with_word_timestamps():
    # inner parts: [10.5, 19.5) and [30.5, 39.5); the reference says a, d, f (and g): b, c and e are made up
    ref = _ref(stretches=[("silence", 10, 20), ("music", 30, 40)], texts=["a", "d", "f", "g"])
    words = [HypWord(9.6, 10.0, "a"),  # midpoint 9.8: before the stretch
             HypWord(10.5, 10.7, "b"),  # 10.6: inside silence
             HypWord(14.0, 16.0, "c"),  # 15.0: inside silence
             HypWord(19.4, 19.8, "d"),  # 19.6: in the margin at its end
             HypWord(34.0, 36.0, "e"),  # 35.0: inside music
             HypWord(44.0, 46.0, "f")]  # 45.0: after both
    got = words_in_stretches(ref, [HypSegment(9.6, 46.0, "a b c d e f", tuple(words))])
    assert (got.total, got.by_kind, got.timing, got.placed) == (3, {"silence": 2, "noise": 0, "music": 1}, "words", 3)
    assert [w for _, w in got.words] == ["b", "c", "e"]
    said = words_in_stretches(_ref(stretches=[("silence", 10, 20)], texts=["a", "b c", "d", "e f"]),
                              [HypSegment(9.6, 46.0, "a b c d e f", tuple(words))])
    assert (said.total, said.placed) == (0, 2)  # b and c are in the reference: real words, late, not made up


def test_words_in_stretches_spread_over_segments():
    ref = _ref(stretches=[("noise", 10, 20)], texts=["one", "two", "three", "five"])
    # five words over 8-12 s: 0.8 s each, midpoints 8.4, 9.2, 10.0, 10.8, 11.6; inner part [10.25, 19.75): "four"
    # and "five" are placed in the stretch, and only "four" is not in the reference
    got = words_in_stretches(ref, [HypSegment(8.0, 12.0, "one two three four five")], margin=0.25)
    assert (got.placed, got.total, got.by_kind["noise"], got.timing) == (2, 1, 1, "segments")
    assert [w for _, w in got.words] == ["four"]
    mixed = words_in_stretches(ref, [HypSegment(8.0, 12.0, "one two three four five"),
                                     HypSegment(15.0, 16.0, "x", (HypWord(15.0, 16.0, "x"),))], margin=0.25)
    assert (mixed.total, mixed.placed, mixed.timing) == (2, 3, "mixed")


def test_repetition_loops():
    hyp = "I said hello hello hello to the the man and we went home we went home we went home"
    loops = repetition_loops(hyp, "I said hello to the man and we went home")
    # "hello" x3 (a 1-gram loop), "the the" is only x2, "we went home" x3 (a 3-gram loop)
    assert [(lp.ngram, lp.repeats, lp.start) for lp in loops] == [(("hello",), 3, 2), (("we", "went", "home"), 3, 10)]
    assert sum(lp.extra_words for lp in loops) == 2 * 1 + 2 * 3
    assert [lp.ngram for lp in repetition_loops(hyp, "he said hello hello hello")] == [("we", "went", "home")]
    (ha,) = repetition_loops("ha ha ha ha")  # the smallest period: "ha" x4, not "ha ha" x2
    assert (ha.ngram, ha.repeats) == (("ha",), 4)
    assert repetition_loops("no no no", "no no no no") == []


def test_start_errors():
    ref = _ref(starts=(1.0, 5.0, 9.0, 20.0))
    segs = [HypSegment(0.8, 5.0, "a"), HypSegment(5.5, 11.0, "b"), HypSegment(12.0, 30.0, "c"),
            HypSegment(19.9, 19.9, "")]  # an empty segment is no segment start
    got = start_errors(ref, segs)
    # 1.0 -> 0.8: 0.2; 5.0 -> 5.5: 0.5; 9.0 -> 12.0: 3.0 (5.5 is 3.5 away); 20.0 -> 12.0: 8.0
    assert got.distances == pytest.approx((0.2, 0.5, 3.0, 8.0))
    assert got.median == pytest.approx((0.5 + 3.0) / 2)
    assert got.p90 == pytest.approx(3.0 + 0.7 * (8.0 - 3.0))  # numpy's linear rule: position 0.9 * 3 = 2.7
    assert start_errors(ref, []).median is None


def test_score_file_and_summary():
    spans = (SpokenSpan("a", 0.0, 2.0, 0.3, 1.8, "The cat sat"), SpokenSpan("b", 2.0, 4.0, 2.4, 3.9, "on the mat."))
    ref = LongformReference("f1", 20.0, spans, (Stretch("silence", 4.0, 20.0),), "hard")
    segs = [SimpleNamespace(start=0.4, end=1.8, text=" The cat sat on", words=None),  # attributes, like Segment
            {"start": 2.4, "end": 3.9, "text": "a mat", "words": None},  # or keys
            {"start": 10.0, "end": 12.0, "text": "thanks thanks thanks",
             "words": [{"start": 10.0, "end": 10.5, "word": "thanks"}, {"start": 10.6, "end": 11.0, "word": "thanks"},
                       {"start": 11.1, "end": 12.0, "word": "thanks"}]}]
    s = score_file(ref, segs)
    # "the cat sat on the mat" vs "the cat sat on a mat thanks thanks thanks": 1 substitution, 3 insertions of 6
    assert (s.words.substitutions, s.words.insertions, s.words.reference_length) == (1, 3, 6)
    assert s.wer == pytest.approx(4 / 6)
    assert s.chars.reference_length == len("the cat sat on the mat")
    assert s.stretch_words.by_kind["silence"] == 3 and len(s.loops) == 1 and s.loops[0].extra_words == 2
    assert s.starts.distances == pytest.approx((0.1, 0.0))  # 0.3 -> 0.4, 2.4 -> 2.4
    other = score_file(dataclasses.replace(ref, name="f2", stretches=()), [HypSegment(0.3, 3.9, "the cat sat on the mat")])
    assert other.wer == 0 and other.stretch_words.total == 0 and other.loops == ()
    total = summarise([s, other])
    assert total.files == 2 and total.wer == pytest.approx(4 / 12)
    assert total.wer_ci[0] <= total.wer <= total.wer_ci[1]
    assert (total.stretch_words, total.loops, total.loop_extra_words, total.stretch_seconds) == (3, 1, 2, 16.0)
    # the four utterance starts pooled: f1's 0.1 and 0.0; f2's one segment starts at 0.3: 0.0 for "a", 2.1 for "b"
    assert total.start_error_median == pytest.approx(np.median([0.1, 0.0, 0.0, 2.1]))
    assert total.to_dict()["stretch_words_by_kind"] == {"silence": 3, "noise": 0, "music": 0}


def test_hypothesis_shapes():
    (seg,) = hyp_segments([{"start": 1, "end": 2, "text": "hi", "words": [SimpleNamespace(start=1, end=2, word="hi")]}])
    assert seg == HypSegment(1.0, 2.0, "hi", (HypWord(1.0, 2.0, "hi"),))


def test_perfect_transcript_of_a_built_file(built):
    ref = built["hard"][0]
    segs = [HypSegment(u.speech_start, u.speech_end, u.text) for u in ref.utterances]
    s = score_file(ref, segs)
    assert s.words.errors == 0 and s.stretch_words.total == 0 and s.loops == () and s.starts.p90 == 0
    stretch = ref.stretches[0]
    noisy = score_file(ref, [*segs, HypSegment(stretch.start + 1, stretch.start + 2, "you")])
    assert noisy.stretch_words.by_kind[stretch.kind] == 1 and noisy.words.insertions == 1
