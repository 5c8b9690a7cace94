"""Pick the best energy backend for this device and turn samples into per-inference figures.

Auto-detection order: an explicit ``--power-cmd`` meter, then RAPL, hwmon
energy counters, hwmon power/rails, Jetson iio rails, the Raspberry Pi 5
PMIC, a discharging battery, and finally the CPU-time estimate (always
available, always ``kind: estimated``). ``backend`` forces one of them.
"""
from __future__ import annotations

import contextlib
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

from ..report import EnergyResult
from .base import ESTIMATED, MEASURED, EnergyError, EnergySource, SourceUnavailable
from .commands import CommandSource, VcgencmdSource
from .estimate import CpuTimeEstimate, choose_profile
from .sampler import PowerSampler, idle_power
from .sysfs import POWER_MONITOR_CHIPS, BatterySource, HwmonEnergySource, HwmonPowerSource, IioPowerSource, RaplSource

BACKENDS = ("command", "rapl", "hwmon", "iio", "vcgencmd", "battery", "estimate")


@dataclass
class EnergyConfig:
    powercap_root: Path = Path("/sys/class/powercap")
    hwmon_root: Path = Path("/sys/class/hwmon")
    iio_root: Path = Path("/sys/bus/iio/devices")
    power_supply_root: Path = Path("/sys/class/power_supply")
    vcgencmd: str | None = "vcgencmd"
    hwmon_chips: tuple[str, ...] = POWER_MONITOR_CHIPS
    power_cmd: str | None = None
    power_profile: str | None = None  # a built-in profile name or a JSON file
    backend: str | None = None  # force one of BACKENDS
    sample_interval_s: float = 0.05
    idle_seconds: float = 1.0
    device_model: str | None = None
    cpu_model: str | None = None

    @classmethod
    def under(cls, sys_root: Path, **kwargs: Any) -> "EnergyConfig":
        """All sysfs roots below ``sys_root`` (``/sys`` on a device, a fake tree in tests)."""
        return cls(powercap_root=sys_root / "class" / "powercap", hwmon_root=sys_root / "class" / "hwmon",
                   iio_root=sys_root / "bus" / "iio" / "devices", power_supply_root=sys_root / "class" / "power_supply",
                   **kwargs)

    def protocol(self) -> dict[str, Any]:
        return {"sample_interval_s": self.sample_interval_s, "idle_seconds": self.idle_seconds,
                "backend_requested": self.backend, "power_cmd": self.power_cmd, "power_profile": self.power_profile}


@dataclass
class Detection:
    source: EnergySource | None  # None: estimate only
    estimate: CpuTimeEstimate
    tried: list[dict[str, str]] = field(default_factory=list)  # backends not used and why

    @property
    def kind(self) -> str:
        return MEASURED if self.source else ESTIMATED

    @property
    def description(self) -> str:
        return self.source.source if self.source else self.estimate.source

    def to_dict(self) -> dict[str, Any]:
        p = self.estimate.profile
        return {"source": self.description, "kind": self.kind, "tried": self.tried,
                "estimate_profile": {"name": p.name, "idle_w": p.idle_w, "active_w": p.active_w, "cores": self.estimate.cores}}


def _candidates(config: EnergyConfig) -> list[tuple[str, Callable[[], EnergySource]]]:
    out: list[tuple[str, Callable[[], EnergySource]]] = [
        ("rapl", lambda: RaplSource(config.powercap_root)),
        ("hwmon", lambda: HwmonEnergySource(config.hwmon_root, config.hwmon_chips)),
        ("hwmon", lambda: HwmonPowerSource(config.hwmon_root, config.hwmon_chips)),
        ("iio", lambda: IioPowerSource(config.iio_root)),
    ]
    if config.vcgencmd:
        out.append(("vcgencmd", lambda: VcgencmdSource(config.vcgencmd)))
    out.append(("battery", lambda: BatterySource(config.power_supply_root)))
    return out


def detect(config: EnergyConfig) -> Detection:
    """Find the first usable backend; an explicit ``power_cmd`` or ``backend`` that fails is an ``EnergyError``."""
    if config.backend is not None and config.backend not in BACKENDS:
        raise EnergyError(f"energy backend {config.backend!r}: unknown (one of {', '.join(BACKENDS)})")
    profile = choose_profile(config.power_profile, config.device_model, config.cpu_model, platform.machine())
    estimate = CpuTimeEstimate(profile, cores=profile.cores or psutil.cpu_count(logical=True) or 1)
    if config.power_cmd or config.backend == "command":
        if not config.power_cmd:
            raise EnergyError("energy backend 'command' needs --power-cmd")
        return Detection(CommandSource(config.power_cmd), estimate)
    if config.backend == "estimate":
        return Detection(None, estimate)
    tried: list[dict[str, str]] = []
    for name, make in _candidates(config):
        if config.backend and name != config.backend:
            continue
        try:
            return Detection(make(), estimate, tried)
        except SourceUnavailable as exc:
            tried.append({"backend": name, "reason": str(exc)})
    if config.backend:
        raise EnergyError(f"energy backend {config.backend!r} unavailable: {tried[-1]['reason'] if tried else 'not detected'}")
    return Detection(None, estimate, tried)


class EnergyMeter:
    """Baseline once, then per-measurement sampling and the per-inference figures."""

    def __init__(self, config: EnergyConfig, detection: Detection | None = None) -> None:
        self.config = config
        self.detection = detection or detect(config)
        self.idle_w: float | None = None
        self.idle_error: str | None = None

    def measure_idle(self) -> None:
        if self.detection.source is None:
            self.idle_w = self.detection.estimate.profile.idle_w
            return
        try:
            self.idle_w = idle_power(self.detection.source, self.config.idle_seconds, self.config.sample_interval_s)
        except ValueError as exc:
            self.idle_error = f"idle baseline failed: {exc}"

    @contextlib.contextmanager
    def sampling(self) -> Iterator[PowerSampler | None]:
        if self.detection.source is None:
            yield None
            return
        with PowerSampler(self.detection.source, self.config.sample_interval_s) as sampler:
            yield sampler

    def result(self, sampler: PowerSampler | None, window: tuple[float, float], cpu_time_s: float, runs: int) -> EnergyResult:
        t0, t1 = window
        span = t1 - t0
        if span <= 0 or runs <= 0:
            raise ValueError("empty timed window")
        if sampler is None:
            est = self.detection.estimate
            total, above = est.energy(cpu_time_s, span)
            p = est.profile
            return EnergyResult(
                source=est.source, kind=ESTIMATED, window_s=span, avg_power_w=total / span, idle_power_w=p.idle_w,
                energy_j=total, energy_above_idle_j=above, mj_per_inference=total / runs * 1e3,
                mj_above_idle_per_inference=above / runs * 1e3,
                notes=[f"profile {p.name}: idle {p.idle_w} W, all {est.cores} cores busy {p.active_w} W; "
                       f"{cpu_time_s:.3f} CPU s over {span:.3f} s"],
            )
        notes = list(sampler.errors)
        if not sampler.covers(t0, t1):
            notes.append("power samples do not cover the whole timed window")
        n = sampler.samples_between(t0, t1)
        if n < 2:
            notes.append(f"only {n} power sample(s) inside the window: figures are interpolated")
        total = sampler.energy_between(t0, t1)
        idle = self.idle_w if self.idle_w is not None else 0.0
        if self.idle_w is None:
            notes.append(self.idle_error or "no idle baseline measured")
        above = total - idle * span
        return EnergyResult(
            source=self.detection.source.source if self.detection.source else "", kind=MEASURED, window_s=span,
            avg_power_w=total / span, idle_power_w=idle, energy_j=total, energy_above_idle_j=above,
            mj_per_inference=total / runs * 1e3, mj_above_idle_per_inference=above / runs * 1e3,
            sample_interval_s=sampler.achieved_interval_s(), samples=n, notes=notes,
        )
