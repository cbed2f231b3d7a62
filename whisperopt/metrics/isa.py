"""The CPU's instruction sets and the fastest kernel path each precision can take on it: the one place that reads
``/proc/cpuinfo`` (never assumed) and names the paths.

A recipe's matrix products run in one precision (``PRECISIONS``); the fastest path for it on a CPU, best first:

- int8: ``amx_int8`` (AMX tiles), ``avx512_vnni`` / ``avx_vnni`` (VPDPBUSD: u8*s8 straight into int32),
  ``avx512bw`` / ``avx2`` (VPMADDUBSW: int16 pair sums); ARM ``i8mm`` (SMMLA), ``asimddp`` (SDOT), ``asimd``;
- bf16: ``amx_bf16``, ``avx512_bf16`` (VDPBF16PS); without them bf16 is converted and multiplied on the fp32 path;
- fp16: ``amx_fp16``, ``avx512_fp16``; without them converted (F16C) to the fp32 path;
- fp32: ``avx512f``, ``avx2`` (FMA), ``avx``, ``sse4_2``; ARM ``sve``, ``asimd``.

Engines pick their kernels themselves; whisperopt records which path ran (``kernel_path``): the engine's own words
where it tells (torch's CPU capability, OpenVINO's executed primitives, CTranslate2's log, whisper.cpp's system info),
and this classification of the CPU's flags for the precision it ran.
"""

from __future__ import annotations

import functools
import platform

CPUINFO = "/proc/cpuinfo"
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
ARM = ("aarch64", "arm64")

# fastest first: (flag, path); a path is named after the flag that enables it
_X86 = {
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni", "avx512bw", "avx2", "sse4_2"),
    "bf16": ("amx_bf16", "avx512_bf16"),
    "fp16": ("amx_fp16", "avx512_fp16"),
    "fp32": ("avx512f", "avx2", "avx", "sse4_2"),
}
_ARM = {"int8": ("i8mm", "asimddp", "asimd"), "bf16": ("bf16",), "fp16": ("asimdhp",), "fp32": ("sve", "asimd")}
AMX = ("amx_int8", "amx_bf16", "amx_fp16")


def parse_cpuinfo(text: str) -> dict:
    """``{"model": str | None, "flags": set}`` from the text of ``/proc/cpuinfo`` (the first processor's lines)."""
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    return {"model": model, "flags": flags or set()}


@functools.lru_cache(maxsize=1)
def cpuinfo() -> dict:
    """This machine's CPU model name and flags (empty where ``/proc/cpuinfo`` cannot be read)."""
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return {"model": None, "flags": set()}


def cpu_flags() -> set[str]:
    return set(cpuinfo()["flags"])


def _is_arm(flags: set[str], machine: str | None) -> bool:
    """An ARM CPU: ``machine`` when given, else its flags (a report judges another machine's), else this one."""
    if machine:
        return machine.lower() in ARM
    if "asimd" in flags:
        return True
    if flags & {"sse4_2", "avx", "avx2"}:
        return False
    return platform.machine().lower() in ARM


def best_isa(precision: str, flags: set[str] | None = None, machine: str | None = None, amx: bool = True) -> str:
    """The fastest path a kernel of ``precision`` has on a CPU with ``flags`` (default: this one's).

    ``amx=False`` for kernel libraries without AMX kernels (fbgemm, a whisper.cpp built without them). A bf16 or fp16
    kernel on a CPU without a unit for it runs on the fp32 path: the result is that path's name followed by
    ``(no bf16 unit)``. ``generic``: none of the known vector extensions."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    flags = cpu_flags() if flags is None else set(flags)
    table = _ARM if _is_arm(flags, machine) else _X86
    for flag in table[precision]:
        if flag in flags and (amx or flag not in AMX):
            return flag
    if precision in ("bf16", "fp16"):
        return f"{best_isa('fp32', flags, machine)} (no {precision} unit)"
    return "generic"


def best_paths(flags: set[str] | None = None, machine: str | None = None) -> dict[str, str]:
    """The fastest path per precision on this CPU (``environment.json``'s ``cpu.kernels``)."""
    return {p: best_isa(p, flags, machine) for p in PRECISIONS}


def kernel_path(precision: str, engine: str, flags: set[str] | None = None, amx: bool = True,
                isa: str | None = None) -> dict:
    """What a runtime records as ``run_info()["isa_path"]``: the precision its matrix products ran in, the ISA path
    (``isa`` when the engine names it, else ``best_isa`` of the CPU's flags) and the engine's own report."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (expected one of {', '.join(PRECISIONS)})")
    return {"precision": precision, "isa": isa or best_isa(precision, flags, amx=amx), "engine": engine}


def path_text(path: dict | None) -> str | None:
    """``int8 avx512_vnni``, ``bf16 amx_bf16``, ``fp32 avx2``: the table's ``isa`` cell."""
    if not path or not path.get("isa"):
        return None
    return f"{path.get('precision', '?')} {path['isa']}"


__all__ = ["PRECISIONS", "best_isa", "best_paths", "cpu_flags", "cpuinfo", "kernel_path", "parse_cpuinfo",
           "path_text"]
