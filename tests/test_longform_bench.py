"""The long-form evaluation (bench/longform.py) and faster-whisper's long-form peer row (ct2-int8-fw-batched).

A short long-form file is built here with data/longform.py's builder: the first 9 utterances of test-clean's
1089-134686 (59 s of speech, read continuously) with three stretches inserted at chosen junctions, 6 s of digital
silence, 10 s of recorded-like noise and 10 s of music-like tones (85 s in all). Trained tiny.en decodes it through
ct2-int8 (the fastest recipe with timestamps) in each long-form mode, and through faster-whisper's own batched
VAD pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from tests.conftest import TEST_CLEAN
from whisperopt.bench import longform as bl
from whisperopt.data import longform as lf
from whisperopt.data.datasets import Dataset, Utterance
from whisperopt.errors import WhisperoptError
from whisperopt.metrics.longform import STRETCH_MARGIN, LongformReference, SpokenSpan, Stretch
from whisperopt.transcribe import TranscribeOptions

SR = 16000
PLAN = [(2, "silence", 6 * SR), (4, "noise", 10 * SR), (7, "music", 10 * SR)]  # (junction, kind, samples)
MAX_WER = 25.0  # percent; measured here: 7.0 sequential, 13.4 batched, 6.3 vad, 4.2 faster-whisper's pipeline


@pytest.fixture(scope="module")
def minute(librispeech, tmp_path_factory) -> Dataset:
    (full,) = lf.find_chapters(TEST_CLEAN)
    chapter = dataclasses.replace(full, files=full.files[:9], ids=full.ids[:9], texts=full.texts[:9])
    path = tmp_path_factory.mktemp("long") / f"{chapter.name}.flac"
    ref = lf.build_file(chapter, path, "hard", PLAN)
    return Dataset("mini-long-hard", [Utterance(ref.name, str(path), ref.text, "en", None, ref)])


@pytest.fixture(scope="module")
def ct2(tiny_en):
    """(recipe, artifact, open runtime) of ct2-int8 on trained tiny.en."""
    pytest.importorskip("faster_whisper")
    from whisperopt.recipes import get_recipe
    from whisperopt.recipes.artifacts import build_artifact

    recipe = get_recipe("ct2-int8")
    artifact, _ = build_artifact(recipe, tiny_en.path, recipe.resolve_options({}))
    runtime = recipe.open(artifact, "cpu", 2)
    yield recipe, artifact, runtime
    runtime.close()


@pytest.fixture(scope="module")
def sequential(ct2, minute, tmp_path_factory):
    recipe, artifact, runtime = ct2
    path = tmp_path_factory.mktemp("seq") / "transcripts.jsonl"
    lines = []
    run = bl.evaluate_longform(recipe, artifact, minute, "sequential", threads=2, runtime=runtime,
                               transcripts_path=path, log=lines.append)
    return run, path, lines


def _in_stretch(ref: LongformReference, t: float) -> bool:
    return any(s.start + STRETCH_MARGIN <= t < s.end - STRETCH_MARGIN for s in ref.stretches)


def _sane(row: dict) -> None:
    assert row["status"] == "ok" and row["files"] == 1 and row["workload"] == "long"
    assert math.isfinite(row["wer"]) and 0 <= row["wer"] <= MAX_WER, row["wer"]
    assert row["wer_ci"][0] <= row["wer"] <= row["wer_ci"][1]
    assert row["rtfx"] > 1 and row["eval_s"] > 0 and math.isclose(row["audio_s"], 85.4, abs_tol=0.5)
    assert row["stretch_words"] == sum(row["stretch_words_by_kind"].values())
    assert row["stretch_seconds"] == pytest.approx(26.0)
    assert row["run_ram_mb"] > 0 and row["peak_ram_mb"] >= row["run_ram_mb"] - 1  # the high-water mark
    json.dumps(row, allow_nan=False)  # summary.json material: plain, finite


# --- no engine --------------------------------------------------------------------------------------------------

def test_each_mode_fixes_its_transcriber_settings():
    assert bl.mode_options("sequential").mode == "sequential"
    assert bl.mode_options("batched", {"batch_size": 4}) == TranscribeOptions(mode="batched", batch_size=4)
    assert bl.mode_options("native") is None
    vad = bl.mode_options("vad", TranscribeOptions(language="en"))
    assert (vad.mode, vad.vad_filter, vad.language) == ("batched", True, "en")
    text_only = bl.mode_options("vad-plain", TranscribeOptions(language="en"))
    assert (text_only.mode, text_only.vad_filter) == ("plain", True)
    # a named variant: the mode with transcription options fixed (a guard measured as a row of its own)
    guarded = bl.mode_options("sequential@loop_repeats=4")
    assert (guarded.mode, guarded.loop_repeats) == ("sequential", 4)
    silence = bl.mode_options("sequential@hallucination_silence_threshold=2")
    assert (silence.hallucination_silence_threshold, silence.word_timestamps) == (2.0, True)  # it needs them
    assert bl.parse_mode("vad@vad_threshold=0.6@batch_size=4") == ("vad", {"vad_threshold": 0.6, "batch_size": 4})
    for bad, match in [("sequential@loop_repeats=1", "mode 'sequential@loop_repeats=1': --loop-repeats must be"),
                       ("vad@vad_filter=false", "'vad_filter' is fixed by mode vad"),
                       ("sequential@beams=2", "'beams' is not a transcription option"),
                       ("sequential@loop_repeats=four", "loop_repeats=four: expected int"),
                       ("sequential@loop_repeats", "expected sequential@FIELD=VALUE"),
                       ("sequential@initial_prompt=../x", "expected sequential@FIELD=VALUE"),
                       ("native@beam_size=5", "native runs the engine's own settings"),
                       ("batched@hallucination_silence_threshold=2", "--mode sequential")]:
        with pytest.raises(WhisperoptError, match=match) as err:
            bl.mode_options(bad)
        assert "\n" not in str(err.value)
    for bad, match in [(("loop", None), "unknown long-form mode 'loop'"),
                       (("batched", {"beams": 2}), "unknown transcription option 'beams'")]:
        with pytest.raises(WhisperoptError, match=match) as err:
            bl.mode_options(*bad)
        assert "\n" not in str(err.value)


def test_a_vad_chunks_words_go_to_the_speech_it_kept():
    """One segment for a whole chunk (no timestamps inside) spans 10 s of non-speech the pipeline left out: spread
    over the segment, 4 of its 10 words land in the stretch; spread over the speech it kept, none do."""
    ref = LongformReference("f", 20.0, (SpokenSpan("a", 0, 5, 0, 5, "x"), SpokenSpan("b", 15, 20, 15, 20, "y")),
                            (Stretch("noise", 5.0, 15.0),))
    seg = {"start": 0.0, "end": 20.0, "text": " ".join(f"w{i}" for i in range(10))}
    spread = bl.FileResult("f", ref, [seg], 20.0, 1.0)
    kept = bl.FileResult("f", ref, [seg], 20.0, 1.0, info={"speech": [[0.0, 5.0], [15.0, 20.0]]})
    assert spread.score.stretch_words.total == 4 and spread.stretch_timing == "segments"  # 6.0-14.0 s: w3..w6
    assert kept.score.stretch_words.total == 0 and kept.stretch_timing == "speech"
    times = [w["start"] for w in bl.scored_segments([seg], [[0.0, 5.0], [15.0, 20.0]])[0]["words"]]
    assert times == pytest.approx([0.5, 1.5, 2.5, 3.5, 4.5, 15.5, 16.5, 17.5, 18.5, 19.5])
    assert bl.scored_segments([seg], None) == [seg]


def test_a_short_form_dataset_is_refused_in_one_line(tmp_path):
    ds = Dataset("short", [Utterance("u", str(tmp_path / "u.flac"), "text")])
    with pytest.raises(WhisperoptError, match="not long-form .*librispeech-long") as err:
        bl.rescore(ds, tmp_path / "t.jsonl")
    assert "\n" not in str(err.value)


# --- trained tiny.en ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sequential_row(sequential, minute):
    run, path, lines = sequential
    row = run.to_row()
    _sane(row)
    ref = minute.utterances[0].longform
    # openai-style seeking puts segment starts on the utterances' speech onsets
    assert row["start_error_median_s"] is not None and row["start_error_median_s"] < 0.5
    (f,) = run.files
    assert all(_in_stretch(ref, t) for t, _ in f.score.stretch_words.words)  # every counted word lies in one
    assert row["reference"] is None and row["wer_delta"] is None  # no reference row given
    assert len(lines) == 1 and "1/1" in lines[0] and "RTFx" in lines[0] and "words in stretches" in lines[0]
    # the transcripts file re-scores to the same figures, and a second call resumes instead of decoding again
    again = bl.LongformRun.from_record(json.loads(json.dumps(run.record())), minute, path)
    assert again.to_row()["wer"] == row["wer"] and again.files[0].segments == f.segments
    assert path.read_text().count("\n") == 1


@pytest.mark.slow
def test_batched_row_paired_against_sequential(ct2, minute, sequential):
    recipe, artifact, runtime = ct2
    seq, path, _ = sequential
    run = bl.evaluate_longform(recipe, artifact, minute, "batched", {"batch_size": 4}, threads=2, runtime=runtime)
    row = run.to_row(seq)
    _sane(row)
    assert run.settings["mode"] == "batched" and run.settings["batch_size"] == 4
    assert row["reference"] == "ct2-int8 sequential" and row["paired_files"] == 1 and row["speedup"] > 0
    assert row["wer_delta"] == pytest.approx(row["wer"] - seq.to_row()["wer"])
    lo, hi = row["wer_delta_ci"]
    assert lo <= row["wer_delta"] <= hi  # one file: the interval is that file's delta
    # resuming the sequential run decodes nothing: its one file comes from the transcripts
    resumed = bl.evaluate_longform(recipe, artifact, minute, "sequential", threads=2, runtime=runtime,
                                   transcripts_path=path)
    assert resumed.resumed == 1 and resumed.files[0].segments == seq.files[0].segments


@pytest.mark.slow
def test_vad_row_keeps_stretches_quiet(ct2, minute, sequential):
    recipe, artifact, runtime = ct2
    seq = sequential[0].to_row()
    row = bl.evaluate_longform(recipe, artifact, minute, "vad", threads=2, runtime=runtime).to_row(sequential[0])
    _sane(row)
    assert row["stretch_words"] <= seq["stretch_words"] and row["stretch_words_by_kind"]["silence"] == 0
    assert row["start_error_median_s"] < 0.5
    # the same chunks text-only: one segment per chunk (a chunk ends at a pause over 1 s), nothing in the stretches
    plain = bl.evaluate_longform(recipe, artifact, minute, "vad-plain", threads=2, runtime=runtime)
    prow = plain.to_row(sequential[0])
    _sane(prow)
    assert prow["mode"] == "vad-plain" and prow["stretch_words"] == 0
    assert all(not _in_stretch(minute.utterances[0].longform, (s["start"] + s["end"]) / 2)
               for s in plain.files[0].segments)


@pytest.mark.slow
def test_faster_whisper_batched_pipeline_is_the_native_peer_row(tiny_en, minute, ct2, sequential):
    from whisperopt.recipes import get_recipe
    from whisperopt.recipes.artifacts import build_artifact

    recipe = get_recipe("ct2-int8-fw-batched")
    assert recipe.base_recipe is get_recipe("ct2-int8") and recipe.shares_base_weights
    artifact, _ = build_artifact(recipe, tiny_en.path, recipe.resolve_options({}))
    assert artifact.manifest["validation"]["inherited_from"] == "ct2-int8"  # ct2-int8's artifact, not a build
    run = bl.evaluate_longform(recipe, artifact, minute, "native", threads=2)
    row = run.to_row(sequential[0])
    _sane(row)
    (f,) = run.files
    ref = minute.utterances[0].longform
    silence = next(s for s in ref.stretches if s.kind == "silence")
    # Silero finds speech around the utterances and none inside digital silence; the words go where it found speech
    assert f.info["speech"] and f.info["speech_s"] < ref.duration - 20
    assert not any(a < silence.end - 1 and b > silence.start + 1 for a, b in f.info["speech"])
    assert f.stretch_timing == "speech" and row["stretch_words_by_kind"]["silence"] == 0
    assert "BatchedInferencePipeline" in run.settings["api"] and run.settings["vad_filter"] is True
    assert run.settings["native"] and row["paired_files"] == 1
    assert "BatchedInferencePipeline defaults" in row["own_settings"]  # labelled: its settings, not the bench's
    assert sequential[0].to_row()["own_settings"] is None
    # the other recipes have no pipeline of their own: mode native is one line
    ct2_recipe, ct2_artifact, ct2_runtime = ct2
    with pytest.raises(WhisperoptError, match="ct2-int8 has no long-form pipeline of its own") as err:
        bl.evaluate_longform(ct2_recipe, ct2_artifact, minute, "native", runtime=ct2_runtime)
    assert "\n" not in str(err.value)


def test_a_peer_row_with_its_own_settings_is_never_recommended():
    from whisperopt.report import recommend_long

    def row(recipe, mode, rtfx, ci, own=None):
        return {"recipe": recipe, "mode": mode, "status": "ok", "rtfx": rtfx, "wer": 5.0, "wer_delta_ci": ci,
                "wer_delta": ci and sum(ci) / 2, "own_settings": own}

    rows = [row("torch-fp32", "sequential", 2.0, None), row("ct2-int8", "vad", 20.0, [-0.5, 0.3]),
            row("ct2-int8-fw-batched", "native", 30.0, [-2.0, -0.5], "faster-whisper's own defaults")]
    rec = recommend_long({"datasets": {"d": {"rows": rows, "reference": "torch-fp32 sequential"}}}, 0.5)["d"]
    assert (rec["recipe"], rec["mode"]) == ("ct2-int8", "vad")  # faster and more accurate, but not the bench's settings
