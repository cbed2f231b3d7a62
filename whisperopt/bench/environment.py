"""The environment block stored with every benchmark: CPU model and ISA flags, threads, OS, library versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform

from .. import __version__
from ..metrics.isa import best_paths, cpuinfo

ISA_FLAGS = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "asimddp",
             "asimdhp", "bf16", "sve", "i8mm"]
PACKAGES = ["jiwer", "numpy"]  # besides what every registered recipe reports (``Recipe.versions``)


def cpu_info() -> dict:
    """CPU model, its ISA flags (from /proc/cpuinfo) and the fastest kernel path each precision has on it
    (``metrics.isa.best_paths``)."""
    info = cpuinfo()
    flags = info["flags"]
    return {"model": info["model"] or platform.processor() or platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags], "kernels": best_paths(flags),
            "logical_cores": os.cpu_count()}


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
