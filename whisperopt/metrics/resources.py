"""Process-level resource measurement: wall time, peak RSS, CPU utilisation, GPU memory."""

from __future__ import annotations

import resource
import sys
import threading
import time
from dataclasses import dataclass, field


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB). Each recipe runs in its own process, so this is its own.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own address space. ``ru_maxrss`` is
    not used there: the kernel carries it over from the parent across fork and exec, so a worker started by a big
    parent (a test runner holding models) would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 1024 / 1024 if sys.platform == "darwin" else ru / 1024


def reset_peak_gpu() -> None:
    from .hardware import cuda_available

    if not cuda_available():  # (no torch import on a machine without a GPU)
        return
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    except Exception:
        pass


def peak_gpu_mb() -> float | None:
    """Peak GPU memory of this process: NVML's per-process figure (all allocators) or torch's, whichever is larger."""
    best = None
    from .hardware import no_gpu_here

    if no_gpu_here():
        return None
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            best = torch.cuda.max_memory_reserved() / 1024 / 1024
    except Exception:
        pass
    nvml = _nvml_process_mb()
    if nvml is not None:
        best = max(best or 0.0, nvml)
    return best


def _nvml_process_mb() -> float | None:
    try:
        import os

        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        pid = os.getpid()
        total = 0
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory:
                    total += proc.usedGpuMemory
        return total / 1024 / 1024 if total else None
    except Exception:
        return None


@dataclass
class CpuMeter:
    """CPU time of this process over a span, as a percentage of one core (like ``top``)."""

    _cpu0: float = 0.0
    _wall0: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    _running: bool = field(default=False, repr=False)

    @staticmethod
    def _cpu() -> float:
        t = resource.getrusage(resource.RUSAGE_SELF)
        return t.ru_utime + t.ru_stime

    def start(self) -> None:
        self._cpu0, self._wall0, self._running = self._cpu(), time.perf_counter(), True

    def stop(self) -> None:
        if self._running:
            self.cpu_s += self._cpu() - self._cpu0
            self.wall_s += time.perf_counter() - self._wall0
            self._running = False

    @property
    def percent(self) -> float | None:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else None


class RssSampler(threading.Thread):
    """Samples this process's RSS while inference runs (peak RAM in use, excluding load-time transients)."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._halt.wait(self.interval)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return self.peak / 1024 / 1024
