"""Polls an energy source in a thread at a known rate and integrates over any time window.

Every sample lands on one timeline of (CLOCK_MONOTONIC seconds, cumulative
joules): counters are used as they are, power readings are integrated with
the trapezoid rule. The worker reports its timed window on the same clock,
so the energy of exactly that window is a difference of two interpolated
points, whatever the backend.
"""
from __future__ import annotations

import bisect
import threading
import time

from .base import ENERGY, EnergySource


class PowerSampler:
    def __init__(self, source: EnergySource, interval_s: float) -> None:
        self.source = source
        self.interval_s = max(interval_s, source.min_interval_s)
        self.times: list[float] = []
        self.energy_j: list[float] = []
        self.errors: list[str] = []
        self._last_power: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)

    def __enter__(self) -> "PowerSampler":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.sample()
            next_at += self.interval_s

    def sample(self) -> None:
        try:
            value = self.source.read()
        except Exception as exc:  # a sensor hiccup (EIO, meter timeout) loses one sample, not the run
            if len(self.errors) < 5:
                self.errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            return
        now = time.monotonic()
        if self.source.quantity == ENERGY:
            cumulative = value
        elif not self.times:
            cumulative = 0.0
        else:
            cumulative = self.energy_j[-1] + (value + self._last_power) / 2 * (now - self.times[-1])
        if self.source.quantity != ENERGY:
            self._last_power = value
        self.times.append(now)
        self.energy_j.append(cumulative)

    # -- integration ------------------------------------------------------------
    def _at(self, t: float) -> float:
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return self.energy_j[0]
        if i >= len(self.times):
            return self.energy_j[-1]
        t0, t1 = self.times[i - 1], self.times[i]
        e0, e1 = self.energy_j[i - 1], self.energy_j[i]
        return e0 + (e1 - e0) * (t - t0) / (t1 - t0) if t1 > t0 else e1

    def energy_between(self, t0: float, t1: float) -> float:
        if len(self.times) < 2:
            raise ValueError("fewer than two power samples")
        return self._at(t1) - self._at(t0)

    def samples_between(self, t0: float, t1: float) -> int:
        return bisect.bisect_right(self.times, t1) - bisect.bisect_left(self.times, t0)

    def covers(self, t0: float, t1: float) -> bool:
        return bool(self.times) and self.times[0] <= t0 and self.times[-1] >= t1

    def achieved_interval_s(self) -> float | None:
        if len(self.times) < 2:
            return None
        return (self.times[-1] - self.times[0]) / (len(self.times) - 1)


def idle_power(source: EnergySource, seconds: float, interval_s: float) -> float:
    """Average power with nothing benchmarked (the baseline subtracted for 'above idle')."""
    with PowerSampler(source, interval_s) as sampler:
        time.sleep(seconds)
    span = sampler.times[-1] - sampler.times[0] if sampler.times else 0.0
    if span <= 0:
        raise ValueError("no idle samples")
    return sampler.energy_between(sampler.times[0], sampler.times[-1]) / span
