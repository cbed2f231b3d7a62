"""The environment block stored with every benchmark: CPU model and ISA flags, threads, OS, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from .. import __version__

ISA_FLAGS = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve", "i8mm"]
PACKAGES = ["jiwer", "numpy"]  # besides what every registered recipe reports (``Recipe.versions``)


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags], "logical_cores": os.cpu_count()}


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


def gpu_info() -> list[dict]:
    try:
        import torch

        if torch.cuda.is_available():
            return [{"name": torch.cuda.get_device_name(i),
                     "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 1024**3, 1)}
                    for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return []


def environment(threads: int, device: str) -> dict:
    return {
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "threads": threads,
        "device": device,
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions(),
    }
