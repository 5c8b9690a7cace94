"""What a tune records: each trial (its knobs, accuracy, cost, fallback) and the summary the bundle keeps."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..precision_fallback import FallbackStep

TUNE_SCHEMA_VERSION = 1


@dataclass
class TrialRecord:
    """One trial: the knobs it sampled and how its primary artifact scored."""

    number: int
    state: str
    knobs: dict[str, Any] = field(default_factory=dict)
    val_accuracy: float | None = None
    #: teacher's validation accuracy minus the artifact's (positive: lost)
    accuracy_drop: float | None = None
    latency_ms: float | None = None
    size_bytes: int | None = None
    peak_rss_mb: float | None = None
    #: energy per inference (mJ) and whether the device measured or estimated it
    energy_mj: float | None = None
    energy_kind: str | None = None
    within_budget: bool = False
    #: on the accuracy / objective Pareto front of the completed trials
    pareto: bool = False
    #: stage kinds this trial trained, and those it found in the cache
    trained: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float | None = None
    error: str | None = None
    #: precision fallback: the primary artifact's ops kept in float, their groups, and each revert's accuracy
    float_ops: list[str] = field(default_factory=list)
    float_groups: list[str] = field(default_factory=list)
    fallback_steps: list[FallbackStep] = field(default_factory=list)
    #: the all-int8 artifact's validation accuracy, before the fallback (None: no fallback ran)
    int8_val_accuracy: float | None = None


@dataclass
class TuneSummary:
    """What the tune did, stored as the ``tune`` row's details in the manifest."""

    objective: str
    max_accuracy_drop: float
    teacher_val_accuracy: float
    primary_target: str
    study: str
    storage: str
    space: list[str]
    trials: list[TrialRecord]
    winner: int | None = None
    #: the trial packed into the bundle: the winner, or the one ``--pack-trial`` chose
    packed: int | None = None
    #: where the trials were benchmarked: "local", or the agent's name
    device: str = "local"
    #: the accuracy-vs-cost plot of the trials (Pareto front marked), when matplotlib could draw it
    plot: str | None = None
    schema_version: int = TUNE_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TuneOutcome:
    summary: TuneSummary | None
    #: the winner's stage rows and targets (empty when no trial met the budget)
    rows: list[Any]
    reference_accuracy: float | None
    bundle_dir: Path | None
    exit_code: int
    message: str
    manifest: Any = None


def signed_points(delta: float) -> str:
    """A change of accuracy in points, signed ('+0.00', never '-0.00')."""
    return f"{delta * 100 + 0.0:+.2f}".replace("-0.00", "+0.00")


class TrialFailed(Exception):
    """A trial that cannot be scored (a bad knob combination, a failed export or benchmark): recorded, not fatal."""


def pareto_front(points: dict[int, tuple[float, float]]) -> set[int]:
    """Trials no other trial beats on both accuracy (higher) and cost (lower)."""
    front = set()
    for n, (acc, cost) in points.items():
        if not any((a >= acc and c <= cost) and (a > acc or c < cost) for m, (a, c) in points.items() if m != n):
            front.add(n)
    return front
