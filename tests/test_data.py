"""Datasets (openslr layout, manifests, named splits) and audio decoding."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from whisperopt.data import has_sound, load_audio, load_dataset, load_librispeech_dir, load_manifest
from whisperopt.errors import WhisperoptError

from .conftest import DEV_CLEAN, TEST_CLEAN


def test_librispeech_test_clean(librispeech):
    ds = load_dataset("librispeech:test-clean")
    assert len(ds) == 100
    ids = [u.id for u in ds.utterances]
    assert ids == sorted(ids)
    assert ds.utterances[0].id == "1089-134686-0000"
    assert ds.utterances[0].text.startswith("HE HOPED THERE WOULD BE STEW")
    stats = ds.stats()
    assert stats["utterances"] == 100 and 700 < stats["total_s"] < 800
    assert len(load_dataset(str(DEV_CLEAN))) == 40
    assert [u.id for u in ds.limit(3).utterances] == ids[:3]
    with pytest.raises(WhisperoptError, match="--limit"):
        ds.limit(0)


def test_audio_is_16k_mono_float32(tmp_path, librispeech):
    ds = load_dataset(str(TEST_CLEAN)).limit(1)
    audio = load_audio(ds.utterances[0].audio)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == sf.info(ds.utterances[0].audio).frames
    # a stereo 44.1 kHz wav is downmixed and resampled
    t = np.arange(44100 * 2) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 44100, subtype="PCM_24")
    out = load_audio(tmp_path / "s.wav")
    assert abs(len(out) - 32000) <= 64
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 440) < 5


def test_manifest(tmp_path, librispeech):
    src = load_dataset(str(TEST_CLEAN)).limit(2).utterances
    for u in src:
        shutil.copy(u.audio, tmp_path / f"{u.id}.flac")
    lines = [{"audio": f"{u.id}.flac", "text": u.text, "language": "en"} for u in src]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ds = load_manifest(tmp_path / "m.jsonl")
    assert [u.id for u in ds.utterances] == [u.id for u in src]
    assert ds.utterances[0].audio == str(tmp_path / f"{src[0].id}.flac")


def test_bad_datasets(tmp_path, librispeech):
    with pytest.raises(WhisperoptError, match="dataset not found"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(WhisperoptError, match="unknown LibriSpeech split"):
        load_dataset("librispeech:test-dirty")
    # an utterance without transcript
    d = tmp_path / "ls" / "1" / "2"
    d.mkdir(parents=True)
    first = load_dataset(str(TEST_CLEAN)).utterances[0]
    shutil.copy(first.audio, d / "1-2-0000.flac")
    shutil.copy(first.audio, d / "1-2-0001.flac")
    (d / "1-2.trans.txt").write_text("1-2-0000 HELLO WORLD\n")
    with pytest.raises(WhisperoptError, match="without transcript"):
        load_librispeech_dir(tmp_path / "ls")
    (d / "1-2.trans.txt").write_text("1-2-0000 HELLO WORLD\n1-2-0001 \n")
    with pytest.raises(WhisperoptError, match="empty transcript"):
        load_librispeech_dir(tmp_path / "ls")
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"audio": str(d / "1-2-0000.flac")}) + "\n")
    with pytest.raises(WhisperoptError, match="without transcript"):
        load_manifest(m)
    m.write_text("{not json\n")
    with pytest.raises(WhisperoptError, match="not valid JSON"):
        load_manifest(m)


def test_bad_audio(tmp_path):
    with pytest.raises(WhisperoptError, match="not found"):
        load_audio(tmp_path / "missing.flac")
    (tmp_path / "empty.flac").write_bytes(b"")
    with pytest.raises(WhisperoptError, match="empty audio file"):
        load_audio(tmp_path / "empty.flac")
    (tmp_path / "text.mp3").write_text("this is not audio at all " * 50)
    with pytest.raises(WhisperoptError, match="cannot decode|no audio|corrupt"):
        load_audio(tmp_path / "text.mp3")


def test_with_sound_drops_digital_silence(tmp_path, librispeech):
    """Calibration and fidelity probes take utterances with sound: an all-zero file is dropped and named, and asking
    for more than there are is one line naming both numbers."""
    real = DEV_CLEAN / "1988" / "24833" / "1988-24833-0000.flac"
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "1" / "2"
    chapter.mkdir(parents=True)
    shutil.copy(real, chapter / "1-2-0001.flac")
    sf.write(chapter / "1-2-0000.flac", np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    (chapter / "1-2.trans.txt").write_text("1-2-0000 NOTHING HEARD\n1-2-0001 SOMETHING SAID\n")
    ds = load_librispeech_dir(tmp_path / "LibriSpeech" / "dev-clean")
    kept = ds.with_sound()
    assert [u.id for u in kept.utterances] == ["1-2-0001"] and kept.silent == ("1-2-0000",)
    assert not has_sound(load_audio(chapter / "1-2-0000.flac")) and has_sound(load_audio(real))
    with pytest.raises(WhisperoptError, match=r"calibration_size=2: dev-clean has only 1 utterances with sound") as err:
        ds.with_sound(2, "x option calibration_size")
    assert "\n" not in str(err.value) and "1 of its 2 are digital silence" in str(err.value)
    assert len(ds.with_sound(2)) == 1  # without a requester: as many as there are, like limit
    # the real dev-clean here: 10 with sound (the recipes' default calibration_size), speaker 84 and 251-118436-0003
    # silent; the build check's first 2 / 6 probes are the same utterances as before the filter
    dev = load_dataset("librispeech:dev-clean")
    first = dev.with_sound(6)
    assert [u.id for u in first.utterances] == [u.id for u in dev.limit(6).utterances] and first.silent == ()
    assert len(dev.with_sound(10, "calibration_size")) == 10
    everything = dev.with_sound()
    assert "251-118436-0003" in everything.silent and not any(u.id.startswith("84-") for u in everything.utterances)
    assert len(everything) + len(everything.silent) == len(dev)
