"""The preloaded library (built on first use, cached by its source's digest) and the environment that applies a
profile to a command."""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from ..fingerprint import cpu_flags, cpu_isa, cpu_model
from ..user_cache import user_cache
from .profiles import CPUID_MASK_ENV, PROFILE_ENV, PROFILES, Profile, active_profile, cpuid_mask_spec

SOURCE = "cpuid_mask.c"


class IsaMaskError(RuntimeError):
    """Why a profile cannot be applied here: one line."""


def profile_named(name: str) -> Profile:
    if name not in PROFILES:
        raise IsaMaskError(f"profile {name!r}: expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


def check_host(profile: Profile) -> None:
    """Refuse a host that cannot apply ``profile``: not Linux x86-64, no CPUID faulting, or lacking the flag the
    profile keeps (a mask only removes features)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        raise IsaMaskError(f"needs Linux on x86-64 (this is {platform.system()} on {platform.machine()})")
    flags = cpu_flags()
    if "cpuid_fault" not in flags:
        raise IsaMaskError(f"this CPU ({cpu_model()}) cannot trap CPUID: no 'cpuid_fault' in /proc/cpuinfo")
    if profile.keeps not in flags:
        current = active_profile()
        seen = f" (masked to {current.name})" if current else ""
        raise IsaMaskError(f"profile {profile.name}: this host{seen} lacks {profile.keeps}; it has "
                           f"{' '.join(cpu_isa()) or 'no listed ISA flags'}")


def host_verdicts() -> dict[str, str | None]:
    """Every profile -> why this host cannot apply it (None: it can)."""
    verdicts: dict[str, str | None] = {}
    for name, profile in PROFILES.items():
        try:
            check_host(profile)
            verdicts[name] = None
        except IsaMaskError as exc:
            verdicts[name] = str(exc)
    return verdicts


def masked_isa(profile: Profile) -> list[str]:
    """This host's kernel-relevant ISA flags as a process under ``profile`` sees them."""
    return [flag for flag in cpu_isa() if flag not in profile.clears]


def library(cache: Path | None = None) -> Path:
    """The compiled library: built with ``$CC`` (else ``cc``) into the user cache the first time, atomically."""
    source = resources.files(__package__).joinpath(SOURCE).read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    folder = cache or user_cache("isa-mask", "EDGEPACK_ISA_MASK_CACHE")
    target = folder / f"cpuid_mask-{digest}.so"
    if target.is_file():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise IsaMaskError("no C compiler to build the CPUID mask library (set CC, or install gcc)")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as work:
        src = Path(work) / SOURCE
        src.write_bytes(source)
        built = Path(work) / target.name
        try:
            result = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(built), str(src), "-ldl"],
                                    capture_output=True, text=True)
        except OSError as exc:
            raise IsaMaskError(f"{compiler} could not build the CPUID mask library: {exc.strerror}") from None
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["no output"])[0]
            raise IsaMaskError(f"{compiler} could not build the CPUID mask library: {first}")
        os.replace(built, target)
    return target


def masked_environ(profile: Profile, env: dict[str, str] | None = None, cache: Path | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the library preloaded and ``profile`` applied; checks the host."""
    check_host(profile)
    lib = str(library(cache))
    out = dict(os.environ if env is None else env)
    preload = [p for p in out.get("LD_PRELOAD", "").replace(":", " ").split() if Path(p).name != Path(lib).name]
    out["LD_PRELOAD"] = " ".join([lib, *preload])
    out[CPUID_MASK_ENV] = cpuid_mask_spec(profile)
    out[PROFILE_ENV] = profile.name
    return out
