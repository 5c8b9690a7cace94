"""The fallback when no sensor is readable: energy estimated from process CPU time.

Model: a board draws ``idle_w`` at rest and ``active_w`` with all ``cores``
busy, linearly in between. The timed window's CPU seconds (all threads of the
worker) therefore cost ``(active_w - idle_w) / cores`` joules each above idle,
and the whole board draws ``idle_w`` over the window on top. Results are
always ``kind: estimated`` and name the profile used.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .base import EnergyError


@dataclass
class PowerProfile:
    name: str
    idle_w: float
    active_w: float
    cores: int | None = None  # None: this machine's logical core count
    match: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (0 <= self.idle_w <= self.active_w):
            raise EnergyError(f"power profile {self.name!r}: need 0 <= idle_w <= active_w")


def _profiles_from(data: Any, where: str) -> dict[str, PowerProfile]:
    if isinstance(data, dict) and "profiles" in data:
        data = data["profiles"]
    elif isinstance(data, dict) and "idle_w" in data:  # one bare profile
        data = {data.get("name", Path(where).stem): {k: v for k, v in data.items() if k != "name"}}
    if not isinstance(data, dict):
        raise EnergyError(f"{where}: expected {{'profiles': {{name: {{idle_w, active_w, cores, match}}}}}}")
    out = {}
    for name, spec in data.items():
        try:
            out[name] = PowerProfile(name=name, **spec)
        except TypeError as exc:
            raise EnergyError(f"{where}: profile {name!r}: {exc}") from None
    return out


def builtin_profiles() -> dict[str, PowerProfile]:
    text = resources.files("device_bench").joinpath("data/power_profiles.json").read_text()
    return _profiles_from(json.loads(text), "power_profiles.json")


def load_profile_file(path: Path) -> dict[str, PowerProfile]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EnergyError(f"--power-profile {path}: unreadable ({exc})") from None
    return _profiles_from(data, str(path))


def choose_profile(requested: str | None, device_model: str | None, cpu_model: str | None, machine: str) -> PowerProfile:
    """A named profile, a file's profile, or the best match for this board (then a generic one per ISA)."""
    profiles = builtin_profiles()
    custom: dict[str, PowerProfile] = {}
    if requested and os.path.isfile(requested):
        custom = load_profile_file(Path(requested))
        if len(custom) == 1:
            return next(iter(custom.values()))
    elif requested:
        if requested not in profiles:
            raise EnergyError(f"--power-profile {requested!r}: unknown (built-in: {', '.join(sorted(profiles))}, or a JSON file)")
        return profiles[requested]
    haystacks = [s.lower() for s in (device_model, cpu_model) if s]
    for candidate in (*custom.values(), *profiles.values()):
        if any(m.lower() in h for m in candidate.match for h in haystacks):
            return candidate
    generic = {"amd64": "generic-x86_64", "arm64": "generic-aarch64", "armv8l": "generic-aarch64"}.get(machine.lower(), f"generic-{machine}")
    return profiles.get(generic, profiles["generic-x86_64"])


@dataclass
class CpuTimeEstimate:
    """Energy from CPU seconds × a power profile."""

    profile: PowerProfile
    cores: int

    @property
    def source(self) -> str:
        return f"estimate:cpu-time×profile:{self.profile.name}"

    def energy(self, cpu_time_s: float, window_s: float) -> tuple[float, float]:
        """(total joules, joules above idle) over a window of ``window_s`` with ``cpu_time_s`` CPU seconds."""
        per_core_w = (self.profile.active_w - self.profile.idle_w) / self.cores
        above = per_core_w * min(cpu_time_s, window_s * self.cores)
        return self.profile.idle_w * window_s + above, above
