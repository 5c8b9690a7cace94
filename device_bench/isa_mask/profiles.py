"""The CPUID feature bits a profile clears, by their ``/proc/cpuinfo`` names, and the mask active in this process.

Nothing here imports more than the standard library: ``device_bench.fingerprint`` reads it on every fingerprint.
"""
from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass

#: the profile a masked process runs under (set by ``launch.masked_environ``, with the library preloaded)
PROFILE_ENV = "EDGEPACK_ISA_MASK"
#: what the preloaded library clears: ``leaf:subleaf:register:hex bits`` entries, comma-separated (register 0-3:
#: eax, ebx, ecx, edx)
CPUID_MASK_ENV = "EDGEPACK_CPUID_MASK"

EAX, EBX, ECX, EDX = range(4)


@dataclass(frozen=True)
class CpuidBit:
    """Where CPUID reports one feature (Intel SDM vol. 2A, CPUID leaf 07H)."""

    leaf: int
    subleaf: int
    register: int
    bit: int


#: ``/proc/cpuinfo`` flag -> its CPUID bit: every feature above AVX2 that an int8 or float kernel dispatches on
CPUID_BITS: dict[str, CpuidBit] = {
    "avx512f": CpuidBit(7, 0, EBX, 16), "avx512dq": CpuidBit(7, 0, EBX, 17), "avx512ifma": CpuidBit(7, 0, EBX, 21),
    "avx512cd": CpuidBit(7, 0, EBX, 28), "avx512bw": CpuidBit(7, 0, EBX, 30), "avx512vl": CpuidBit(7, 0, EBX, 31),
    "avx512vbmi": CpuidBit(7, 0, ECX, 1), "avx512_vbmi2": CpuidBit(7, 0, ECX, 6), "gfni": CpuidBit(7, 0, ECX, 8),
    "vaes": CpuidBit(7, 0, ECX, 9), "vpclmulqdq": CpuidBit(7, 0, ECX, 10), "avx512_vnni": CpuidBit(7, 0, ECX, 11),
    "avx512_bitalg": CpuidBit(7, 0, ECX, 12), "avx512_vpopcntdq": CpuidBit(7, 0, ECX, 14),
    "avx512_vp2intersect": CpuidBit(7, 0, EDX, 8), "amx_bf16": CpuidBit(7, 0, EDX, 22),
    "avx512_fp16": CpuidBit(7, 0, EDX, 23), "amx_tile": CpuidBit(7, 0, EDX, 24), "amx_int8": CpuidBit(7, 0, EDX, 25),
    "avx_vnni": CpuidBit(7, 1, EAX, 4), "avx512_bf16": CpuidBit(7, 1, EAX, 5), "amx_fp16": CpuidBit(7, 1, EAX, 21),
    "avx_ifma": CpuidBit(7, 1, EAX, 23), "avx_vnni_int8": CpuidBit(7, 1, EDX, 4),
    "avx_ne_convert": CpuidBit(7, 1, EDX, 5),
}

_AMX_AND_NEWER = frozenset({"amx_bf16", "amx_tile", "amx_int8", "amx_fp16", "avx512_fp16", "avx_vnni",
                            "avx_ifma", "avx_vnni_int8", "avx_ne_convert"})


@dataclass(frozen=True)
class Profile:
    """A CPU class to emulate: the flag it keeps on top (the host must have it) and the flags it clears."""

    name: str
    keeps: str
    clears: frozenset[str]
    like: str


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("avx2", "avx2", frozenset(CPUID_BITS),
            "an AVX2-only x86 CPU (AMD Zen 2, Intel Haswell to Comet Lake): no AVX-512, VNNI or AMX"),
    Profile("avx512_vnni", "avx512_vnni", _AMX_AND_NEWER,
            "AVX-512 with VNNI and no AMX (AMD Zen 4, Intel Cascade Lake and Ice Lake)"),
)}


def cpuid_mask_spec(profile: Profile) -> str:
    """The preloaded library's ``CPUID_MASK_ENV`` value for ``profile``: one entry per (leaf, subleaf, register)."""
    bits: dict[tuple[int, int, int], int] = {}
    for flag in sorted(profile.clears):
        where = CPUID_BITS[flag]
        key = (where.leaf, where.subleaf, where.register)
        bits[key] = bits.get(key, 0) | (1 << where.bit)
    return ",".join(f"{leaf}:{subleaf}:{register}:{value:x}" for (leaf, subleaf, register), value in sorted(bits.items()))


def cpuid_faulting() -> bool:
    """True when CPUID faults in this thread (``arch_prctl(ARCH_GET_CPUID)`` is 0): the library is trapping it."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(158, 0x1011, 0) == 0  # SYS_arch_prctl, ARCH_GET_CPUID
    except (OSError, AttributeError):
        return False


def active_profile() -> Profile | None:
    """The profile this process runs under: named in the environment and CPUID really trapped (a variable
    inherited without the library masks nothing, and is not believed)."""
    name = os.environ.get(PROFILE_ENV)
    if not name or name not in PROFILES or not cpuid_faulting():
        return None
    return PROFILES[name]


def masked_flags() -> frozenset[str]:
    """The ``/proc/cpuinfo`` flags the runtimes in this process do not see (empty without a mask)."""
    profile = active_profile()
    return profile.clears if profile else frozenset()
