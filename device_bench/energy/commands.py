"""Energy backends that run a command: Raspberry Pi 5 PMIC (``vcgencmd``) and an external meter.

Spawning a process costs milliseconds, so these sources declare a minimum
sampling interval; the sampler never polls them faster.
"""
from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess

from .base import POWER, EnergyError, EnergySource, SourceUnavailable

_PMIC_LINE = re.compile(r"^\s*(?P<rail>\S+)_(?P<unit>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>[-+\d.eE]+)[AV]\s*$")
_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _run(argv: list[str], timeout_s: float) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise OSError(f"exit status {proc.returncode}" + (f": {detail[0][:200]}" if detail else ""))
    return proc.stdout


def parse_pmic(text: str) -> float:
    """Sum of current × voltage over the PMIC rails that report both (watts)."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _PMIC_LINE.match(line)
        if m:
            (amps if m["unit"] == "A" else volts)[m["rail"]] = float(m["value"])
    rails = sorted(set(amps) & set(volts))
    if not rails:
        raise ValueError("no rail reported both current and voltage")
    return sum(amps[r] * volts[r] for r in rails)


class VcgencmdSource(EnergySource):
    """Raspberry Pi 5 PMIC ADC (``vcgencmd pmic_read_adc``): SoC-side rails, not the USB-C input."""

    backend = "vcgencmd"
    quantity = POWER
    min_interval_s = 0.2

    def __init__(self, command: str = "vcgencmd") -> None:
        path = shutil.which(command)
        if path is None:
            raise SourceUnavailable(f"vcgencmd: {command!r} not found")
        self._argv = [path, "pmic_read_adc"]
        try:
            parse_pmic(_run(self._argv, timeout_s=5))
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            raise SourceUnavailable(f"vcgencmd: pmic_read_adc unusable ({str(exc).splitlines()[0][:200]})") from None
        super().__init__("vcgencmd:pmic_read_adc")

    def read(self) -> float:
        return parse_pmic(_run(self._argv, timeout_s=5))


def parse_watts(text: str) -> float:
    m = _FLOAT.search(text)
    if not m:
        raise ValueError(f"no number in {text.strip()[:80]!r}")
    value = float(m.group())
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{value} is not a power in watts")
    return value


class CommandSource(EnergySource):
    """An external meter: a user command (no shell) that prints the current power in watts."""

    backend = "command"
    quantity = POWER
    min_interval_s = 0.1

    def __init__(self, command: str, timeout_s: float = 5.0) -> None:
        try:
            self._argv = shlex.split(command)
        except ValueError as exc:
            raise EnergyError(f"--power-cmd: {exc}") from None
        if not self._argv:
            raise EnergyError("--power-cmd: empty command")
        self._timeout = timeout_s
        try:
            self.read()
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            raise EnergyError(f"--power-cmd {command!r}: {str(exc).splitlines()[0][:200]}") from None
        super().__init__(f"command:{command}")

    def read(self) -> float:
        return parse_watts(_run(self._argv, timeout_s=self._timeout))
