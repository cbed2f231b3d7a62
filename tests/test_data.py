"""Datasets (openslr layout, manifests, named splits) and audio decoding."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from whisperopt.data import load_audio, load_dataset, load_librispeech_dir, load_manifest
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
