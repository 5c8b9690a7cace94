"""Energy backends that read Linux sysfs: RAPL powercap, hwmon power monitors, Jetson iio rails, batteries.

Units as the kernel documents them: powercap ``energy_uj`` µJ; hwmon
``power*_input`` µW, ``energy*_input`` µJ, ``in*_input`` mV, ``curr*_input`` mA;
iio ``in_power*_input`` mW; power_supply ``power_now`` µW, ``current_now`` µA,
``voltage_now`` µV. Where a board exposes several rails, the board-input rail
(VDD_IN, POM_5V_IN…) is used alone because it already includes the others;
without one, the rails are summed and the source says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .base import ENERGY, POWER, EnergySource, SourceUnavailable, read_int, read_text

#: board-input rails: they carry the whole board's power, the other rails are parts of it
TOTAL_RAILS = frozenset({"VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VIN", "IN"})
#: hwmon drivers of board power monitors (desktop hwmon chips report voltages, not power)
POWER_MONITOR_CHIPS = ("ina3221", "ina219", "ina220", "ina226", "ina230", "ina231", "ina209", "ina238", "ina260")


def _readable(path: Path, what: str) -> int:
    try:
        return read_int(path)
    except PermissionError:
        raise SourceUnavailable(f"{what}: {path} is not readable by this user (root only on this kernel)") from None
    except (OSError, ValueError) as exc:
        raise SourceUnavailable(f"{what}: cannot read {path} ({type(exc).__name__})") from None


# -- RAPL ----------------------------------------------------------------------

class RaplSource(EnergySource):
    """Intel/AMD RAPL package (or platform ``psys``) energy counters, wraparound handled."""

    backend = "rapl"
    quantity = ENERGY

    def __init__(self, root: Path) -> None:
        zones = [z for z in sorted(Path(root).glob("intel-rapl:*")) if z.name.count(":") == 1]
        if not zones:
            raise SourceUnavailable(f"rapl: no powercap zones under {root}")
        named = [(z, read_text(z / "name") or z.name) for z in zones]
        psys = [(z, n) for z, n in named if n == "psys"]
        chosen = psys or [(z, n) for z, n in named if n.startswith("package")] or named
        self._paths = [z / "energy_uj" for z, _ in chosen]
        self._ranges = [_readable(z / "max_energy_range_uj", "rapl") for z, _ in chosen]
        self._last = [_readable(p, "rapl") for p in self._paths]
        self._total_uj = 0
        super().__init__("rapl:" + "+".join(n for _, n in chosen))

    def read(self) -> float:
        for i, path in enumerate(self._paths):
            raw = read_int(path)
            delta = raw - self._last[i]
            if delta < 0:  # the counter wrapped past max_energy_range_uj
                delta += self._ranges[i]
            self._total_uj += delta
            self._last[i] = raw
        return self._total_uj / 1e6


# -- hwmon ---------------------------------------------------------------------

@dataclass
class _Rail:
    label: str
    read_w: Callable[[], float]


def _pick_rails(rails: list[_Rail], where: str) -> tuple[list[_Rail], str]:
    totals = [r for r in rails if r.label.upper() in TOTAL_RAILS]
    if totals:
        return totals[:1], f"{where}:{totals[0].label}"
    return rails, f"{where}:sum({'+'.join(r.label for r in rails)})"


def _hwmon_rails(chip: Path, name: str) -> list[_Rail]:
    """power*_input channels, else in*_input × curr*_input pairs with the same index."""
    rails: list[_Rail] = []
    for p in sorted(chip.glob("power[0-9]*_input")):
        idx = p.name[len("power"):-len("_input")]
        label = read_text(chip / f"power{idx}_label") or f"power{idx}"
        _readable(p, f"hwmon {name}")
        rails.append(_Rail(label, lambda p=p: read_int(p) / 1e6))
    if rails:
        return rails
    for c in sorted(chip.glob("curr[0-9]*_input")):
        idx = c.name[len("curr"):-len("_input")]
        v = chip / f"in{idx}_input"
        if not v.exists():
            continue
        label = read_text(chip / f"in{idx}_label") or read_text(chip / f"curr{idx}_label") or f"rail{idx}"
        _readable(c, f"hwmon {name}")
        _readable(v, f"hwmon {name}")
        rails.append(_Rail(label, lambda v=v, c=c: read_int(v) * read_int(c) / 1e6))  # mV × mA = µW
    return rails


class HwmonPowerSource(EnergySource):
    """INA3221 (Jetson, JetPack 5+), INA219/226… rails: power, or voltage × current."""

    backend = "hwmon"
    quantity = POWER

    def __init__(self, root: Path, chips: tuple[str, ...] = POWER_MONITOR_CHIPS) -> None:
        found: list[tuple[str, list[_Rail]]] = []
        for chip in sorted(Path(root).glob("hwmon*")):
            name = read_text(chip / "name") or chip.name
            if name not in chips:
                continue
            rails = _hwmon_rails(chip, name)
            if rails:
                found.append((name, rails))
        if not found:
            raise SourceUnavailable(f"hwmon: no power monitor ({', '.join(chips)}) with power or voltage/current inputs under {root}")
        # several chips (e.g. Jetson AGX has two INA3221): prefer the one carrying the board input
        with_total = [(n, r) for n, r in found if any(x.label.upper() in TOTAL_RAILS for x in r)]
        if with_total:
            name, rails = with_total[0]
            self._rails, source = _pick_rails(rails, f"hwmon:{name}")
        else:
            self._rails = [r for _, rs in found for r in rs]
            source = "hwmon:" + "+".join(f"{n}:sum({'+'.join(r.label for r in rs)})" for n, rs in found)
        super().__init__(source)

    def read(self) -> float:
        return sum(r.read_w() for r in self._rails)


class HwmonEnergySource(EnergySource):
    """hwmon ``energy*_input`` counters (µJ) of a power monitor."""

    backend = "hwmon"
    quantity = ENERGY

    def __init__(self, root: Path, chips: tuple[str, ...] = POWER_MONITOR_CHIPS) -> None:
        self._paths: list[Path] = []
        names = []
        for chip in sorted(Path(root).glob("hwmon*")):
            name = read_text(chip / "name") or chip.name
            if name not in chips:
                continue
            for p in sorted(chip.glob("energy[0-9]*_input")):
                _readable(p, f"hwmon {name}")
                self._paths.append(p)
                names.append(f"{name}:{p.name}")
        if not self._paths:
            raise SourceUnavailable(f"hwmon: no energy*_input counters under {root}")
        self._last = [read_int(p) for p in self._paths]
        self._total_uj = 0
        super().__init__("hwmon:" + "+".join(names))

    def read(self) -> float:
        for i, p in enumerate(self._paths):
            raw = read_int(p)
            self._total_uj += max(0, raw - self._last[i])  # a reset counter restarts, it does not go back
            self._last[i] = raw
        return self._total_uj / 1e6


# -- Jetson JetPack 4 iio --------------------------------------------------------

class IioPowerSource(EnergySource):
    """Jetson (JetPack 4) INA3221 via iio: ``in_power<N>_input`` in mW, ``rail_name_<N>``."""

    backend = "iio"
    quantity = POWER

    def __init__(self, root: Path) -> None:
        rails: list[_Rail] = []
        for dev in sorted(Path(root).glob("iio:device*")):
            for p in sorted(dev.glob("in_power[0-9]*_input")):
                idx = p.name[len("in_power"):-len("_input")]
                label = read_text(dev / f"rail_name_{idx}") or f"{dev.name}:power{idx}"
                _readable(p, "iio")
                rails.append(_Rail(label, lambda p=p: read_int(p) / 1e3))
        if not rails:
            raise SourceUnavailable(f"iio: no in_power*_input rails under {root}")
        self._rails, source = _pick_rails(rails, "iio")
        super().__init__(source)

    def read(self) -> float:
        return sum(r.read_w() for r in self._rails)


# -- battery --------------------------------------------------------------------

class BatterySource(EnergySource):
    """A discharging battery's draw: ``power_now``, or ``current_now`` × ``voltage_now``."""

    backend = "battery"
    quantity = POWER

    def __init__(self, root: Path) -> None:
        reasons = []
        for supply in sorted(Path(root).glob("*")):
            if read_text(supply / "type") != "Battery":
                continue
            status = read_text(supply / "status")
            if status != "Discharging":
                reasons.append(f"{supply.name} is {status or 'in an unknown state'} (its reading is not the device's draw)")
                continue
            if (supply / "power_now").exists():
                path = supply / "power_now"
                _readable(path, "battery")
                self._read: Callable[[], float] = lambda: abs(read_int(path)) / 1e6
                super().__init__(f"battery:{supply.name}:power_now")
                return
            cur, volt = supply / "current_now", supply / "voltage_now"
            if cur.exists() and volt.exists():
                _readable(cur, "battery")
                _readable(volt, "battery")
                self._read = lambda: abs(read_int(cur)) * read_int(volt) / 1e12  # µA × µV
                super().__init__(f"battery:{supply.name}:current_now*voltage_now")
                return
            reasons.append(f"{supply.name} has neither power_now nor current_now/voltage_now")
        raise SourceUnavailable("battery: " + ("; ".join(reasons) if reasons else f"no battery under {root}"))

    def read(self) -> float:
        return self._read()
