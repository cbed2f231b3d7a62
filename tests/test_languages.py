"""Language detection and translation on a trained multilingual model: base, from the `real-base` extra.

English comes from LibriSpeech test-clean; Spanish and German speech is generated here by espeak-ng (Debian
package, installed by .ci/run when missing). espeak-ng's French voice is not recognisable enough for base (it was
detected as Thai), so it is not used.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from whisperopt.cli import main
from whisperopt.models.wheels import BY_MODEL, installed

SPEECH = {
    "es": "Buenos días. Hoy vamos a hablar del tiempo y de las noticias más importantes de la semana en nuestra ciudad.",
    "de": "Guten Morgen. Heute sprechen wir über das Wetter und die wichtigsten Nachrichten der Woche in unserer Stadt.",
}


@pytest.fixture(scope="module")
def base(whisperopt_cache):
    if not installed(BY_MODEL["base"]):
        pytest.fail("the trained base is not installed: pip install -e '.[real-base]'")
    from whisperopt.models import resolve_model

    return resolve_model("base")


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing (apt-get install espeak-ng; .ci/run installs it)")
    out = tmp_path_factory.mktemp("speech")
    for lang, text in SPEECH.items():
        subprocess.run(["espeak-ng", "-v", lang, "-w", str(out / f"{lang}.wav"), text], check=True)
    return out


def _transcribe(capsys, audio, out, *args) -> dict:
    code = main(["transcribe", str(audio), "--model", "base", "--recipe", "torch-fp32", "--threads", "2",
                 "-f", "json", "-o", str(out), "--beam-size", "1", *args])
    capsys.readouterr()
    assert code == 0
    return json.loads((out / f"{Path(audio).stem}.json").read_text())


@pytest.mark.slow
def test_detects_english_on_test_clean(base, librispeech, tmp_path, capsys):
    from whisperopt.data import load_dataset

    utt = load_dataset("librispeech:test-clean").limit(1).utterances[0]
    result = _transcribe(capsys, utt.audio, tmp_path, "--language", "auto")
    assert result["language"] == "en"
    assert "stew for dinner" in result["text"].lower()


@pytest.mark.slow
@pytest.mark.parametrize("lang", sorted(SPEECH))
def test_detects_generated_speech(base, spoken, tmp_path, capsys, lang):
    result = _transcribe(capsys, spoken / f"{lang}.wav", tmp_path, "--language", "auto")
    assert result["language"] == lang
    assert ("noticias" if lang == "es" else "morgen") in result["text"].lower()


@pytest.mark.slow
def test_translate_to_english(base, spoken, tmp_path, capsys):
    result = _transcribe(capsys, spoken / "es.wav", tmp_path, "--language", "es", "--task", "translate")
    text = result["text"].lower()
    assert "good morning" in text and "news" in text  # English words, not the Spanish ones
    assert "noticias" not in text
