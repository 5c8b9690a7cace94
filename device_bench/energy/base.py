"""The energy source interface shared by every backend.

A source is read at a known rate by ``sampler.PowerSampler``. It reports
either a cumulative energy counter in joules (RAPL, hwmon ``energy*_input``)
or an instantaneous power in watts (everything else); the sampler turns both
into one cumulative-energy timeline so integration over a window is the same
for all backends.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

MEASURED = "measured"
ESTIMATED = "estimated"
ENERGY = "energy"  # read() returns cumulative joules
POWER = "power"  # read() returns watts


class EnergyError(RuntimeError):
    """Energy measurement cannot go on as asked (e.g. ``--power-cmd`` fails); one-line message."""


class SourceUnavailable(Exception):
    """This backend is not usable on this device; the message says why (shown by ``edgepack-agent info``)."""


class EnergySource(ABC):
    #: short backend key: "rapl", "hwmon", "iio", "battery", "vcgencmd", "command"
    backend: ClassVar[str]
    quantity: ClassVar[str]
    kind: ClassVar[str] = MEASURED
    #: reading faster than this is pointless or expensive (spawning a command)
    min_interval_s: ClassVar[float] = 0.0

    def __init__(self, source: str) -> None:
        #: what exactly is read, e.g. "rapl:package-0+package-1" or "hwmon:ina3221:VDD_IN"
        self.source = source

    @abstractmethod
    def read(self) -> float:
        """Cumulative joules (``quantity == ENERGY``) or watts (``quantity == POWER``)."""


def read_int(path: Path) -> int:
    """A sysfs integer; PermissionError and OSError propagate (callers turn them into reasons)."""
    return int(Path(path).read_text().strip())


def read_text(path: Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None
