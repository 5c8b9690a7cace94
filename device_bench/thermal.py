"""Thermal zones: a hot SoC throttles, so every measurement records the temperatures around it.

Before each target the bench waits (bounded) until every zone is below a
threshold; if the wait runs out the result is marked ``started_hot`` rather
than silently mixing throttled and unthrottled figures.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .report import ThermalResult

DEFAULT_ROOT = Path("/sys/class/thermal")


@dataclass
class ThermalConfig:
    root: Path = DEFAULT_ROOT
    threshold_c: float = 70.0
    max_wait_s: float = 60.0
    poll_s: float = 1.0


def _zone_index(path: Path) -> int:
    suffix = path.name.removeprefix("thermal_zone")
    return int(suffix) if suffix.isdigit() else -1


def read_zones(root: Path = DEFAULT_ROOT) -> dict[str, float]:
    """Zone temperatures in °C keyed ``<type>`` (``<type>#<n>`` when types repeat); unreadable zones skipped."""
    out: dict[str, float] = {}
    for zone in sorted(Path(root).glob("thermal_zone*"), key=_zone_index):
        try:
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            name = (zone / "type").read_text().strip() or zone.name
        except OSError:
            name = zone.name
        key = name if name not in out else f"{name}#{_zone_index(zone)}"
        out[key] = milli / 1000.0
    return out


def wait_until_cool(config: ThermalConfig) -> ThermalResult:
    """Wait until all zones are below the threshold or ``max_wait_s`` passes; return the state before the run."""
    start = time.monotonic()
    temps = read_zones(config.root)
    while temps and max(temps.values()) >= config.threshold_c and time.monotonic() - start < config.max_wait_s:
        time.sleep(min(config.poll_s, max(0.0, config.max_wait_s - (time.monotonic() - start))))
        temps = read_zones(config.root)
    hot = bool(temps) and max(temps.values()) >= config.threshold_c
    return ThermalResult(threshold_c=config.threshold_c, before_c=temps,
                         waited_s=round(time.monotonic() - start, 3), started_hot=hot)
