"""Parity on other x86 kernel families at pack time (``pack --verify-isa``, a recipe's ``parity.isas``).

int8 numerics depend on the kernels a CPU gets (ONNX Runtime's AVX2 u8s8 kernels saturate where VNNI and AMX do
not), so a gate passed with the packing host's kernels says little about an AVX2 mini-PC's. Each verified artifact's
gates are recomputed by the device-side check (``check_parity_here``) in workers that run under an
``edgepack isa-mask`` profile: that family's kernels, emulated on this CPU. The result goes to the manifest
(``targets[].parity_by_isa``); an artifact below its gate there is reported, not dropped: it still holds on this
host's family, and the device re-checks its own kernels before it runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from device_bench.bench import BenchError, check_parity_here
from device_bench.fingerprint import cpu_model
from device_bench.isa_mask.launch import IsaMaskError, check_host, host_verdicts, profile_named
from device_bench.manifest import STATUS_FAILED, IsaParity, Manifest

from .errors import EdgepackError

#: every profile this host can apply
ALL = "all"


def resolve_isas(names: list[str] | None, key: str = "--verify-isa") -> list[str]:
    """The profiles to check, refused by name before any work when this host cannot apply one (``all``: every
    profile it can; none is not an error)."""
    if not names:
        return []
    if ALL in names:
        return [name for name, why_not in host_verdicts().items() if why_not is None]
    for name in names:
        try:
            check_host(profile_named(name))
        except IsaMaskError as exc:
            raise EdgepackError(f"{key} {name}: {exc}") from None
    return list(dict.fromkeys(names))


def check_isas(stage: Path, manifest: Manifest, isas: list[str], step: Callable[[str], None]) -> None:
    """Record every artifact's gates on each profile's kernels in ``manifest`` (the folder ``stage`` holds it)."""
    entries = [t for t in manifest.targets if t.status != STATUS_FAILED and t.file]
    host = cpu_model()
    for isa in isas:
        step(f"parity on {isa} kernels (emulated)")
        try:
            check = check_parity_here(stage, [t.name for t in entries], isa=isa)
        except BenchError as exc:
            for entry in entries:
                entry.parity_by_isa.append(IsaParity(isa=isa, passed=False, emulated_on=host, error=str(exc)))
            continue
        for row in check.results:
            parity = row.device_parity
            error = (parity.error if parity else None) or row.error
            manifest.target(row.target).parity_by_isa.append(IsaParity(
                isa=isa, passed=bool(parity and parity.passed and not error),
                metrics=dict(parity.metrics) if parity else {}, shortfalls=list(parity.shortfalls) if parity else [],
                emulated_on=host, error=error))
