"""What machine produced a benchmark: CPU, cores, frequency policy, memory, OS, runtimes.

Read from ``/proc`` and ``/sys`` (roots configurable so tests use fake trees)
and ``importlib.metadata``; nothing heavy is imported.
"""
from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from .isa_mask.profiles import active_profile, masked_flags
from .runners import RUNNERS, runner_class

AGENT_DISTRIBUTION = "edgepack"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def cpu_model(proc_root: Path = Path("/proc")) -> str:
    """'model name' on x86, 'Model'/'Hardware' on ARM boards, else what platform knows."""
    text = _read(proc_root / "cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine()


#: CPU features the runtimes' int8/fp kernels dispatch on (x86: AVX2 vs AVX-512 VNNI vs AMX; ARM: dot product, i8mm)
KERNEL_ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "sme",
)


def cpu_flags(proc_root: Path = Path("/proc")) -> set[str]:
    """Every flag of the first CPU in ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``) as this process's
    runtimes see them: less what an active ``edgepack isa-mask`` profile hides from CPUID."""
    for line in (_read(proc_root / "cpuinfo") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return set(value.split()) - masked_flags()
    return set()


def cpu_isa(proc_root: Path = Path("/proc")) -> list[str]:
    """The kernel-relevant ISA flags (``cpu_flags``): int8 numerics and which artifact is fastest depend on them."""
    present = cpu_flags(proc_root)
    return [flag for flag in KERNEL_ISA_FLAGS if flag in present]


def isa_mask() -> str | None:
    """The ``edgepack isa-mask`` profile this process runs under (None: the host's own kernels)."""
    profile = active_profile()
    return profile.name if profile else None


def mask_note() -> str:
    """What a report says after the host's ISA when a mask is active ("" without one)."""
    mask = isa_mask()
    if not mask:
        return ""
    return (f" — emulated: `edgepack isa-mask {mask}` on {cpu_model()} (CPUID masked: that ISA's kernels and int8 "
            "numerics; the timings are this core running them, a proxy for that CPU's)")


def kernel_tag(isa: list[str] | None = None) -> str:
    """The int8 kernel family, marked when it comes from a mask (``avx2_masked``): results files of an emulated
    ISA never overwrite a real host's."""
    family = int8_kernel_family(isa)
    return f"{family}_masked" if isa_mask() else family


#: the int8 kernel families, most capable first: the first present names the kernels a host's int8 runs on
INT8_KERNEL_FAMILIES = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512f", "avx2", "i8mm", "asimddp", "asimd")


def int8_kernel_family(isa: list[str] | None = None) -> str:
    """The one flag that decides which int8 kernels run (results are filed and compared per family)."""
    present = cpu_isa() if isa is None else isa
    return next((flag for flag in INT8_KERNEL_FAMILIES if flag in present), platform.machine() or "unknown")


def device_model(proc_root: Path = Path("/proc")) -> str | None:
    """Board name from the device tree (Raspberry Pi, Jetson…); None on PCs."""
    return _read(proc_root / "device-tree" / "model") or None


def cpufreq(sys_root: Path = Path("/sys")) -> dict[str, Any]:
    """Governor and frequencies per policy (cores sharing a clock), in MHz."""
    base = sys_root / "devices" / "system" / "cpu" / "cpufreq"
    policies = sorted(base.glob("policy*")) if base.is_dir() else []
    if not policies:  # older kernels: per-cpu directories only
        policies = sorted((sys_root / "devices" / "system" / "cpu").glob("cpu[0-9]*/cpufreq"))
    out: dict[str, Any] = {}
    for p in policies:
        name = p.name if p.name.startswith("policy") else p.parent.name
        entry: dict[str, Any] = {"governor": _read(p / "scaling_governor")}
        for key, fname in (("cur_mhz", "scaling_cur_freq"), ("min_mhz", "scaling_min_freq"), ("max_mhz", "scaling_max_freq")):
            raw = _read(p / fname)
            entry[key] = int(raw) / 1000 if raw and raw.isdigit() else None
        cpus = _read(p / "affected_cpus")
        if cpus:
            entry["cpus"] = [int(c) for c in cpus.split()]
        out[name] = entry
    return out


def device_runtimes() -> dict[str, str | None]:
    """Each known runtime key -> installed version, or None; a runner module that fails to import counts as missing."""
    out: dict[str, str | None] = {}
    for key in RUNNERS:
        try:
            out[key] = runner_class(key).installed_version()
        except (ImportError, AttributeError):
            out[key] = None
    return out


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def fingerprint(sys_root: Path = Path("/sys"), proc_root: Path = Path("/proc")) -> dict[str, Any]:
    vm = psutil.virtual_memory()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    freq = cpufreq(sys_root)
    governors = sorted({p["governor"] for p in freq.values() if p.get("governor")})
    return {
        "hostname": socket.gethostname(),
        "device_model": device_model(proc_root),
        "cpu_model": cpu_model(proc_root),
        "isa": cpu_isa(proc_root),
        "isa_mask": isa_mask(),
        "machine": platform.machine(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": psutil.cpu_count(logical=True),
        "cpu_affinity": affinity,
        "cpufreq": freq,
        "governor": governors[0] if len(governors) == 1 else (governors or None),
        "memory_total_mb": round(vm.total / 2**20),
        "memory_available_mb": round(vm.available / 2**20),
        "os": platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "edgepack": package_version(AGENT_DISTRIBUTION),
        "numpy": package_version("numpy"),
        "runtimes": device_runtimes(),
    }
