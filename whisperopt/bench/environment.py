"""The environment block stored with every benchmark: CPU model and ISA flags, threads, OS, library versions
(hardware facts come from ``metrics.hardware``)."""

from __future__ import annotations

import importlib.metadata
import platform

from .. import __version__
from ..metrics.hardware import cpu_info, gpus

PACKAGES = ["jiwer", "numpy"]  # besides what every registered recipe reports (``Recipe.versions``)


def versions() -> dict:
    out = {"whisperopt": __version__, "python": platform.python_version()}
    from ..recipes import all_recipes

    for recipe in all_recipes().values():
        out.update({pkg: v for pkg, v in recipe.versions().items() if v})
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return dict(sorted(out.items()))


def environment(threads: int, device: str) -> dict:
    return {
        "cpu": cpu_info(),
        "gpus": gpus(),
        "threads": threads,
        "device": device,
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions(),
    }
