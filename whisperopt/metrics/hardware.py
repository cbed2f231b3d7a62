"""One home for the machine's hardware facts: the CPU (model, ISA flags, fastest kernel path per precision — parsed
by ``metrics.isa``), the cores this process may use and the default thread count, and the CUDA devices.

The default thread count is one rule everywhere (bench, transcribe, serve, a build's decode check, calibration):
every core this process may run on (``sched_getaffinity``; ``os.cpu_count()`` where the OS has no affinity), so a
``taskset``/cgroup-limited run never oversubscribes. Runs record the count they used (``environment.json``, each
export's record).
"""

from __future__ import annotations

import os
import platform

from .isa import best_paths, cpuinfo

ISA_FLAGS = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "asimddp",
             "asimdhp", "bf16", "sve", "i8mm"]


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """The thread count every command uses unless told otherwise."""
    return usable_cores()


def threads_or_default(threads: int | None) -> int:
    return default_threads() if threads is None else threads


def cpu_info() -> dict:
    """CPU model, the ISA flags whisperopt cares about, the fastest kernel path per precision, the cores."""
    info = cpuinfo()
    flags = info["flags"]
    return {"model": info["model"] or platform.processor() or platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags], "kernels": best_paths(flags),
            "logical_cores": os.cpu_count(), "usable_cores": usable_cores()}


# what a GPU torch could use leaves on Linux: NVIDIA's driver and device nodes, ROCm's /dev/kfd (torch.cuda is HIP
# there), WSL2's /dev/dxg. None of them: no GPU, and no need to import torch (~3 s) to be told so.
GPU_TRACES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def no_gpu_here() -> bool:
    """True when this Linux machine certainly has no GPU an engine could use (an answer without importing torch)."""
    import sys

    return sys.platform.startswith("linux") and not any(os.path.exists(p) for p in GPU_TRACES)


def cuda_available() -> bool:
    """Whether torch sees a CUDA (or ROCm) device; on a Linux machine with no GPU driver, answered without torch."""
    if no_gpu_here():
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def default_device() -> str:
    """``cuda`` where torch sees a CUDA device, else ``cpu`` (what ``--device auto`` means)."""
    return "cuda" if cuda_available() else "cpu"


def resolve_device(device: str) -> str:
    return default_device() if device == "auto" else device


def gpus() -> list[dict]:
    """Name and memory of each CUDA device torch sees (none without torch or CUDA)."""
    if no_gpu_here():
        return []
    try:
        import torch

        if torch.cuda.is_available():
            return [{"name": torch.cuda.get_device_name(i),
                     "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 1024**3, 1)}
                    for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return []
