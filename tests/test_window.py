"""The adaptive encoder window (recipe option ``window``): the frame arithmetic, named variants, the refusal of
engines that cannot take it, and on trained tiny.en every engine that takes it encoding fewer frames with
transcripts as good as the full window's."""

from __future__ import annotations

import pytest

from whisperopt.constants import N_FRAMES, WINDOW_AUTO_FLOOR_S, WINDOW_MARGIN_S
from whisperopt.data import load_dataset
from whisperopt.data.features import window_frames
from whisperopt.errors import WhisperoptError
from whisperopt.metrics.roofline import whisper_cost
from whisperopt.metrics.wer import utterance_errors
from whisperopt.recipes import all_recipes, get_recipe
from whisperopt.recipes.artifacts import artifact_path, build_artifact
from whisperopt.recipes.base import DecodeOptions


def test_window_frames():
    floor = WINDOW_AUTO_FLOOR_S * 100
    assert window_frames([2.0], "auto") == floor  # short clips get the floor
    assert window_frames([2.0], "30") == N_FRAMES  # the default: today's full window
    long = 25.3
    expected = min(N_FRAMES, -(-int((long + WINDOW_MARGIN_S) * 100) // 100) * 100)
    assert window_frames([long], "auto") == expected >= (long + WINDOW_MARGIN_S) * 100
    assert window_frames([2.0, long], "auto") == expected  # a batch: its longest clip
    assert window_frames([29.9], "auto") == N_FRAMES and window_frames([45.0], "5") == N_FRAMES  # never truncated
    assert window_frames([1.0], "3") == 300
    for bad in ("0", "31", "abc", "10.5", "-3"):
        with pytest.raises(WhisperoptError, match="window must be auto or whole seconds"):
            window_frames([1.0], bad)


def test_roofline_work_follows_the_window():
    cost = whisper_cost({"d_model": 384, "num_mel_bins": 80, "encoder_layers": 4, "decoder_layers": 4,
                         "vocab_size": 51864})
    full = cost.encoder_flops + cost.cross_kv_flops
    assert cost.fixed_flops() == pytest.approx(full) == cost.fixed_flops(30.0)
    third = cost.fixed_flops(10.0)
    # linear parts a third, self-attention a ninth
    assert third == pytest.approx((full - cost.encoder_attention_flops) / 3 + cost.encoder_attention_flops / 9)
    assert 0 < cost.encoder_attention_flops < cost.encoder_flops


def test_variants_share_the_artifact_and_name_their_rows(tiny_model):
    plain, auto = get_recipe("ct2-int8"), get_recipe("ct2-int8@window=auto")
    assert auto.name == "ct2-int8@window=auto" and auto.variant_of == "ct2-int8" and not auto.baseline
    assert auto.resolve_options({})["window"] == "auto" and plain.resolve_options({})["window"] == "30"
    path = tiny_model.path
    assert artifact_path(auto, path, auto.resolve_options({})) == artifact_path(plain, path, plain.resolve_options({}))
    assert not get_recipe("torch-fp32@window=auto").baseline  # the baseline stays the full window
    for bad, match in [("ct2-int8@window=../../x", "letters, digits"), ("ct2-int8@window", "KEY=VALUE"),
                       ("ct2-int8@nope=1", "has no option nope"), ("ct2-int8@window=40", "option window: expected"),
                       ("no-such@window=auto", "unknown recipe")]:
        with pytest.raises(WhisperoptError, match=match) as err:
            get_recipe(bad)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", [n for n, r in all_recipes().items() if r.window_unsupported])
def test_engines_that_cannot_take_a_window_refuse_it_in_one_line(name):
    recipe = get_recipe(name)
    assert recipe.resolve_options({"window": "30"})["window"] == "30"
    with pytest.raises(WhisperoptError, match=f"{name} option window=auto: .*full 30-s windows only") as err:
        recipe.resolve_options({"window": "auto"})
    assert "\n" not in str(err.value) and len(recipe.window_unsupported) > 20  # says why


def _spy(runtime, seen: list[int]):
    """Record the encoder input length each engine is given (frames), wherever the engine takes it."""
    if hasattr(runtime, "encode_window"):  # transformers generate: torch, Optimum ONNX Runtime, OpenVINO
        inner = runtime.encode_window

        def encode_window(feats):
            seen.append(feats.shape[-1])
            return inner(feats)
        runtime.encode_window = encode_window
    elif hasattr(runtime, "recorder"):  # CTranslate2 under faster-whisper
        engine = runtime.recorder._model

        class Spy:
            def encode(self, features, to_cpu=False):
                seen.append(features.shape[-1])
                return engine.encode(features, to_cpu=to_cpu)

            def __getattr__(self, name):
                return getattr(engine, name)
        runtime.recorder._model = Spy()
    elif hasattr(runtime.model, "encoder"):  # openai-whisper
        runtime.model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[-1]))
    else:  # whisper.cpp: audio_ctx, in encoder positions
        inner = runtime.model.transcribe

        def transcribe(audio, **params):
            seen.append(2 * params["audio_ctx"] or N_FRAMES)
            return inner(audio, **params)
        runtime.model.transcribe = transcribe


@pytest.fixture(scope="module")
def speech(librispeech):
    utts = load_dataset("librispeech:test-clean").limit(3).utterances
    return utts, [u.load() for u in utts]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch-fp32", "ct2-int8", "onnx-fp32", "openvino-fp32", "whispercpp-q8_0",
                                  "openai-whisper-fp32"])
def test_adaptive_window_encodes_less_and_transcribes_as_well(name, tiny_en, speech):
    recipe = get_recipe(name + "@window=auto")
    reason = recipe.unavailable_reason("cpu")
    if reason:
        pytest.fail(f"{name}: {reason} (the test extras install every engine)")
    utts, audios = speech
    artifact, _ = build_artifact(recipe, tiny_en.path, recipe.resolve_options({}))
    runtime = recipe.open(artifact, "cpu", 2)
    try:
        assert runtime.window == "auto"
        seen: list[int] = []
        _spy(runtime, seen)
        auto = [runtime.transcribe([a], DecodeOptions())[0].text for a in audios]
        runtime.window = "30"
        full = [runtime.transcribe([a], DecodeOptions())[0].text for a in audios]
    finally:
        runtime.close()
    want = [window_frames([len(a) / 16000], "auto") for a in audios]
    assert seen[:len(audios)] == want and max(want) < N_FRAMES  # the encoder got the adaptive window
    errors = {k: sum(utterance_errors(u.text, x)[0].errors for u, x in zip(utts, texts))
              for k, texts in (("auto", auto), ("full", full))}
    assert errors["auto"] <= errors["full"] + 3, (errors, auto, full)  # 3 utterances, 54 words


def test_transcription_refuses_the_window_in_one_line(tiny_en):
    from whisperopt.transcribe import Transcriber

    with pytest.raises(WhisperoptError, match="transcription keeps full 30-s windows") as err:
        Transcriber.load("tiny.en", "ct2-int8@window=auto")
    assert "\n" not in str(err.value)
