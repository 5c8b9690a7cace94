"""Benchmark reports: schema-versioned dataclasses, JSON round trip, and the readable table.

One ``BenchReport`` per device (a local run, or what an agent sends back); a
fleet run wraps several in a ``FleetReport`` together with the devices that
could not be reached, so one document and one table cover them all.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .records import RecordError, from_dict

REPORT_SCHEMA_VERSION = 1

RESULT_OK = "ok"
RESULT_FAILED = "failed"
RESULT_SKIPPED = "skipped"


class ReportError(ValueError):
    """A report document that does not match the schema."""


@dataclass
class LatencyStats:
    """Per-inference wall time over the timed runs, in milliseconds."""

    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float


@dataclass
class EnergyResult:
    """Energy over the timed window; ``kind`` says whether it was measured or estimated."""

    source: str
    kind: str  # "measured" | "estimated"
    window_s: float
    avg_power_w: float
    idle_power_w: float
    energy_j: float
    energy_above_idle_j: float
    mj_per_inference: float
    mj_above_idle_per_inference: float
    sample_interval_s: float | None = None
    samples: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ThermalResult:
    """Thermal zone temperatures (°C) around one measurement."""

    threshold_c: float
    before_c: dict[str, float] = field(default_factory=dict)
    after_c: dict[str, float] = field(default_factory=dict)
    waited_s: float = 0.0
    started_hot: bool = False


@dataclass
class ResultKey:
    """Which measurement a result row is, and whether it ran."""

    target: str
    runtime: str
    precision: str
    threads: int | None  # None: the runtime's default thread count
    status: str  # ok | failed | skipped
    error: str | None = None
    file_size_bytes: int | None = None


@dataclass
class TimingMetrics:
    """What the timing worker measures; the worker fills these and the report carries them as they are."""

    affinity: list[int] | None = None
    load_cold_ms: float | None = None
    load_warm_ms: float | None = None
    first_inference_ms: float | None = None
    warmup_runs: int | None = None
    runs: int | None = None
    timed_s: float | None = None
    latency_ms: LatencyStats | None = None
    throughput_ips: float | None = None
    cpu_time_s: float | None = None
    cpu_util: float | None = None  # CPU seconds per wall second over the timed window (1.0 = one core busy)
    output_shape: list[int] | None = None
    raw_ms: list[float] = field(default_factory=list)


@dataclass
class MemoryMetrics:
    """What the memory worker measures (its own pass: sampling would perturb timing)."""

    rss_after_load_mb: float | None = None
    peak_rss_mb: float | None = None
    runtime_details: dict[str, Any] = field(default_factory=dict)


def metric_values(record: TimingMetrics | MemoryMetrics, kind: type) -> dict[str, Any]:
    """The fields ``kind`` (TimingMetrics or MemoryMetrics) declares, read from ``record``: what a result takes over."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(kind)}


@dataclass
class TargetResult(MemoryMetrics, TimingMetrics, ResultKey):
    """One row: target x thread count. Fields: ResultKey, then TimingMetrics, MemoryMetrics, then these."""

    energy: EnergyResult | None = None
    thermal: ThermalResult | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchReport:
    device: str
    fingerprint: dict[str, Any]
    protocol: dict[str, Any]
    bundle: dict[str, Any]
    results: list[TargetResult] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = REPORT_SCHEMA_VERSION
    kind: str = "device"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"schema_version": d.pop("schema_version"), "kind": d.pop("kind"), **d}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "BenchReport":
        _check_header(data, "device")
        try:
            results = [_result_from_dict(r) for r in data.get("results", [])]
            fields = {k: v for k, v in data.items() if k not in ("results", "schema_version", "kind")}
            return cls(results=results, **fields)
        except (TypeError, AttributeError) as exc:
            raise ReportError(f"report: {exc}") from None

    @property
    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if r.status == RESULT_FAILED]


@dataclass
class DeviceError:
    """A device of a fleet that produced no report (unreachable, rejected the bundle…)."""

    device: str
    url: str
    error: str


@dataclass
class FleetReport:
    reports: list[BenchReport] = field(default_factory=list)
    errors: list[DeviceError] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = REPORT_SCHEMA_VERSION
    kind: str = "fleet"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "kind": self.kind,
            "created_at": self.created_at,
            "reports": [r.to_dict() for r in self.reports],
            "errors": [dataclasses.asdict(e) for e in self.errors],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "FleetReport":
        _check_header(data, "fleet")
        try:
            return cls(
                reports=[BenchReport.from_dict(r) for r in data.get("reports", [])],
                errors=[DeviceError(**e) for e in data.get("errors", [])],
                created_at=data["created_at"],
            )
        except (TypeError, KeyError) as exc:
            raise ReportError(f"fleet report: {exc}") from None

    @property
    def failed(self) -> list[TargetResult]:
        return [r for rep in self.reports for r in rep.failed]


def load_report(path: Path) -> BenchReport | FleetReport:
    data = json.loads(Path(path).read_text())
    return FleetReport.from_dict(data) if data.get("kind") == "fleet" else BenchReport.from_dict(data)


def _check_header(data: Any, kind: str) -> None:
    if not isinstance(data, dict):
        raise ReportError("report: expected a JSON object")
    if data.get("schema_version") != REPORT_SCHEMA_VERSION:
        raise ReportError(
            f"report: schema_version {data.get('schema_version')!r} is not supported (this edgepack reads {REPORT_SCHEMA_VERSION})"
        )
    if data.get("kind", "device") != kind:
        raise ReportError(f"report: kind {data.get('kind')!r}, expected {kind!r}")


def _result_from_dict(d: Any) -> TargetResult:
    try:
        return from_dict(TargetResult, d, "result")
    except RecordError as exc:
        raise ReportError(f"report: {exc}") from None


# -- the readable table ------------------------------------------------------

def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _energy_cell(e: EnergyResult | None) -> str:
    if e is None:
        return "-"
    tag = "meas" if e.kind == "measured" else "est"
    v = e.mj_above_idle_per_inference
    text = f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"
    return f"{text} ({tag})"


def render_table(report: BenchReport | FleetReport):
    """A rich Table: one row per device × target × thread count; failures say why."""
    from rich.table import Table

    fleet = isinstance(report, FleetReport)
    reports = report.reports if fleet else [report]
    table = Table(title="edgepack bench", show_lines=False)
    if fleet:
        table.add_column("device")
    for name, justify in (("target", "left"), ("precision", "left"), ("threads", "right"), ("size MB", "right"),
                          ("load ms", "right"), ("p50 ms", "right"), ("p90 ms", "right"), ("p99 ms", "right"),
                          ("mean±std ms", "right"), ("inf/s", "right"), ("peak RSS MB", "right"),
                          ("mJ/inf >idle", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for rep in reports:
        for r in rep.results:
            lead = [rep.device] if fleet else []
            threads = "default" if r.threads is None else str(r.threads)
            size = _num(r.file_size_bytes / 1e6 if r.file_size_bytes is not None else None)
            if r.status != RESULT_OK:
                span = ["", "", "", "", "", "", "", ""]
                span[0] = f"[red]{r.status}[/red]: {r.error or ''}" if r.status == RESULT_FAILED else f"[yellow]skipped[/yellow]: {r.error or ''}"
                table.add_row(*lead, r.target, r.precision, threads, size, *span)
                continue
            lat = r.latency_ms
            table.add_row(
                *lead, r.target, r.precision, threads, size,
                _num(r.load_cold_ms, "{:.1f}"),
                _num(lat.p50 if lat else None, "{:.3f}"),
                _num(lat.p90 if lat else None, "{:.3f}"),
                _num(lat.p99 if lat else None, "{:.3f}"),
                f"{lat.mean:.3f}±{lat.std:.3f}" if lat else "-",
                _num(r.throughput_ips, "{:.1f}"),
                _num(r.peak_rss_mb, "{:.1f}"),
                _energy_cell(r.energy),
            )
    if fleet:
        for err in report.errors:
            table.add_row(err.device, f"[red]unreachable[/red]: {err.error}", *[""] * 11)
    return table
