"""What a tune is asked for: the objective, the budget, the trials, where trials are benchmarked."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import EdgepackError

OBJECTIVES = ("latency", "size", "energy")


Progress = Callable[[str], None]


@dataclass
class BenchDevice:
    """Where each trial's artifact is benchmarked: an ``edgepack-agent`` (the device the bundle is for)."""

    name: str
    url: str
    token: str | None = None
    fingerprint: str | None = None  # the agent's pinned certificate (https)

    def client(self, timeout_s: float = 30.0):
        from device_bench.client import AgentClient

        return AgentClient(self.url, self.token, timeout_s=timeout_s, fingerprint=self.fingerprint)


@dataclass
class TuneOptions:
    max_accuracy_drop: float
    trials: int
    objective: str = "latency"
    #: stop starting trials after this many seconds (a running trial finishes)
    timeout_s: float | None = None
    #: optuna storage URL (default: sqlite in ``work_dir``) and study name (default "tune")
    storage: str | None = None
    study: str | None = None
    #: stage cache, study and trial bundles (default: next to the output, ``OUT.tune``)
    work_dir: Path | None = None
    #: device_bench settings of each trial (runs, minimum seconds, warm-up runs)
    bench_runs: int = 50
    bench_seconds: float = 0.5
    bench_warmup: int = 5
    #: benchmark on this agent instead of here
    device: BenchDevice | None = None
    #: run no trial: pack this finished trial of the study (another point of the front than the winner)
    pack_trial: int | None = None
    #: an int8 primary artifact over the budget keeps its most harmful op groups in float until it is within
    fallback: bool = True

    @property
    def device_name(self) -> str:
        return self.device.name if self.device is not None else "local"

    def validate(self) -> None:
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise EdgepackError(f"--max-accuracy-drop: {self.max_accuracy_drop} is outside [0, 1]")
        if self.trials < 1:
            raise EdgepackError(f"--trials: {self.trials} must be at least 1")
        if self.objective not in OBJECTIVES:
            raise EdgepackError(f"--objective: {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise EdgepackError("--timeout: must be above 0")
        if (self.storage is None) != (self.study is None) and self.storage is not None:
            raise EdgepackError("--storage needs --study (the study's name in that database)")
        if self.storage is not None and "://" not in self.storage:
            raise EdgepackError(f"--storage: expected a database URL such as sqlite:///tune.db, got {self.storage!r}")
        if self.bench_runs < 1 or self.bench_seconds < 0:
            raise EdgepackError("--bench-runs must be at least 1 and --bench-seconds not negative")
        if self.pack_trial is not None and self.pack_trial < 0:
            raise EdgepackError(f"--pack-trial: {self.pack_trial} is not a trial number")


def parse_duration(text: str) -> float:
    """'2h', '90m', '45s', '3600' -> seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    value = text.strip().lower()
    scale = units.get(value[-1:], None)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1.0)
    except ValueError:
        raise EdgepackError(f"--timeout {text!r}: expected a duration such as 2h, 90m, 45s or 3600") from None
    if seconds <= 0:
        raise EdgepackError(f"--timeout {text!r}: must be above 0")
    return seconds
