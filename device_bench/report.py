"""Benchmark reports: schema-versioned dataclasses, JSON round trip, and the readable table.

One ``BenchReport`` per device (a local run, or what an agent sends back); a
fleet run wraps several in a ``FleetReport`` together with the devices that
could not be reached, so one document and one table cover them all.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .manifest import ManifestError, check_version
from .parity import DeviceParity, gate_summary
from .records import RecordError, from_dict
from .speed_profile import SpeedProfile

#: Same evolution rule as the manifest: additive fields bump the minor version, readers of the same major
#: accept them (listing what they ignore), a new major is refused. Minor 1: real-length latency, per-length
#: table, noise guard. Minor 2: ``device_parity`` (the pack's parity gates recomputed on the device). Minor 3:
#: ``fastest`` (speed profiles); MACs per inference and achieved GMAC/s per row and per length.
REPORT_SCHEMA_VERSION = 1
REPORT_SCHEMA_MINOR = 3

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
class NoiseGuard:
    """Was the timed window quiet? CPU other processes used (in cores) and the runs' coefficient of variation."""

    cv: float
    noisy: bool
    other_processes_cores: float | None = None
    reasons: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass
class LengthLatency:
    """One row of the per-length table: inputs of exactly ``length`` tokens, run at ``padded_to``."""

    length: int
    runs: int
    p50: float
    p90: float
    mean: float
    std: float
    padded_to: int | None = None
    noise: NoiseGuard | None = None
    p99: float | None = None
    macs: int | None = None  # minor 3: multiply-accumulates per inference at the length run (padded_to, if padded)
    gmac_per_s: float | None = None  # minor 3: macs / p50


@dataclass
class InputLengths:
    """The real-length inputs behind ``latency_ms``: their token counts and the lengths they were padded to."""

    n: int
    mean: float
    p50: float
    p90: float
    max: int
    padded_to: dict[str, int] = field(default_factory=dict)
    truncated: int | None = None  # texts longer than seq_len, cut to it before they got here


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
    #: what ``latency_ms`` measured: "real-length" (each input padded only to the smallest length the artifact
    #: accepts; minor 1) or "padded-seq_len" (reports before minor 1)
    latency_inputs: str = "padded-seq_len"
    input_lengths: InputLengths | None = None
    by_length: list[LengthLatency] = field(default_factory=list)  # per-bucket table; the largest is the old figure
    noise: NoiseGuard | None = None


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
    device_parity: DeviceParity | None = None  # minor 2: None for bundles without parity inputs
    #: minor 3: multiply-accumulates per inference at the real inputs' mean length (the manifest's formula), and
    #: those per p50 of ``latency_ms``: how far the artifact is from the chip's peak
    macs_per_inference: int | None = None
    gmac_per_s: float | None = None


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
    schema_minor: int = REPORT_SCHEMA_MINOR
    #: minor 3: per thread count, the fastest verified artifact on this device (stored there for `edgepack run`)
    fastest: list[SpeedProfile] = field(default_factory=list)

    #: fields of the document this reader does not know (a newer minor version), set by ``from_dict``
    ignored_fields: typing.ClassVar[list[str]] = []

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"schema_version": d.pop("schema_version"), "schema_minor": d.pop("schema_minor"),
                "kind": d.pop("kind"), **d}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> "BenchReport":
        _check_header(data, "device")
        ignored: list[str] = []
        try:
            report = from_dict(cls, {k: v for k, v in data.items() if k != "kind"}, "report", ignore_unknown=True,
                               ignored=ignored)
        except RecordError as exc:
            raise ReportError(str(exc)) from None
        report.ignored_fields = [name.removeprefix("report.") for name in ignored]
        return report

    @property
    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if r.status == RESULT_FAILED]

    @property
    def below_parity(self) -> list[TargetResult]:
        """Results whose artifact missed a parity gate on this device (or whose check could not run)."""
        return [r for r in self.results if r.device_parity is not None and not r.device_parity.passed]


@dataclass
class ParityRow(ResultKey):
    """One target of ``edgepack check --on-device``: its parity on this device, or why it was not checked."""

    device_parity: DeviceParity | None = None


@dataclass
class ParityCheck:
    """``edgepack check BUNDLE --on-device``: the pack's parity gates on this device's kernels, with the device."""

    bundle: str
    task: str
    fingerprint: dict[str, Any]
    results: list[ParityRow] = field(default_factory=list)

    @property
    def below_parity(self) -> list[ParityRow]:
        return [r for r in self.results if r.device_parity is not None and not r.device_parity.passed]


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
    schema_minor: int = REPORT_SCHEMA_MINOR

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "schema_minor": self.schema_minor,
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

    @property
    def below_parity(self) -> list[TargetResult]:
        return [r for rep in self.reports for r in rep.below_parity]


def load_report(path: Path) -> BenchReport | FleetReport:
    data = json.loads(Path(path).read_text())
    return FleetReport.from_dict(data) if data.get("kind") == "fleet" else BenchReport.from_dict(data)


def _check_header(data: Any, kind: str) -> None:
    if not isinstance(data, dict):
        raise ReportError("report: expected a JSON object")
    try:
        check_version(data.get("schema_version"), data.get("schema_minor", 0), "report", REPORT_SCHEMA_VERSION)
    except ManifestError as exc:
        raise ReportError(str(exc)) from None
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
    for name, justify in (("target", "left"), ("runtime", "left"), ("precision", "left"), ("threads", "right"),
                          ("size MB", "right"),
                          ("load ms", "right"), ("p50 ms", "right"), ("p90 ms", "right"), ("p99 ms", "right"),
                          ("mean±std ms", "right"), ("inf/s", "right"), ("GMAC/s", "right"),
                          ("peak RSS MB", "right"), ("mJ/inf >idle", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for rep in reports:
        for r in rep.results:
            lead = [rep.device] if fleet else []
            threads = "default" if r.threads is None else str(r.threads)
            size = _num(r.file_size_bytes / 1e6 if r.file_size_bytes is not None else None)
            if r.status != RESULT_OK:
                span = ["", "", "", "", "", "", "", "", ""]
                span[0] = f"[red]{r.status}[/red]: {r.error or ''}" if r.status == RESULT_FAILED else f"[yellow]skipped[/yellow]: {r.error or ''}"
                table.add_row(*lead, r.target, r.runtime, r.precision, threads, size, *span)
                continue
            lat = r.latency_ms
            flag = " [red]noisy[/red]" if r.noise is not None and r.noise.noisy else ""
            table.add_row(
                *lead, r.target, r.runtime, r.precision, threads, size,
                _num(r.load_cold_ms, "{:.1f}"),
                _num(lat.p50 if lat else None, "{:.3f}") + flag,
                _num(lat.p90 if lat else None, "{:.3f}"),
                _num(lat.p99 if lat else None, "{:.3f}"),
                f"{lat.mean:.3f}±{lat.std:.3f}" if lat else "-",
                _num(r.throughput_ips, "{:.1f}"),
                _num(r.gmac_per_s, "{:.1f}"),
                _num(r.peak_rss_mb, "{:.1f}"),
                _energy_cell(r.energy),
            )
    if fleet:
        for err in report.errors:
            table.add_row(err.device, "[red]unreachable[/red]")
        if report.errors:  # the reason under the table, whole: a cell of a 15-column table folds it past reading
            table.caption = "\n".join(f"[red]unreachable[/red]: {err.device}: {err.error}" for err in report.errors)
            table.caption_justify = "left"
    return table


def render_length_table(report: BenchReport | FleetReport):
    """p50 per input length (the per-bucket table), one row per device × target × thread count; None when no
    result has one. Figures measured while the machine was busy are marked ``noisy``."""
    from rich.table import Table

    fleet = isinstance(report, FleetReport)
    rows = [(rep, r) for rep in (report.reports if fleet else [report]) for r in rep.results if r.by_length]
    if not rows:
        return None
    lengths = sorted({row.length for _, r in rows for row in r.by_length})
    table = Table(title="p50 ms by input length (tokens → padded length); real = the texts' own lengths")
    if fleet:
        table.add_column("device")
    for name in ("target", "threads", "real p50", *map(str, lengths)):
        table.add_column(name, justify="left" if name == "target" else "right")
    for rep, r in rows:
        cells = {row.length: f"{row.p50:.3f}" + (f" (→{row.padded_to})" if row.padded_to not in (None, row.length) else "")
                 + (" [red]noisy[/red]" if row.noise and row.noise.noisy else "") for row in r.by_length}
        real = _num(r.latency_ms.p50 if r.latency_ms else None, "{:.3f}")
        table.add_row(*([rep.device] if fleet else []), r.target, "default" if r.threads is None else str(r.threads),
                      real, *(cells.get(n, "-") for n in lengths))
    return table


def render_parity_table(report: BenchReport | FleetReport):
    """The pack's parity gates recomputed on the device, one row per device × target × thread count (the worst
    length beside the calibration rows'); None when no result has a check (bundles without parity inputs)."""
    from rich.table import Table

    fleet = isinstance(report, FleetReport)
    rows = [(rep, r) for rep in (report.reports if fleet else [report]) for r in rep.results
            if r.device_parity is not None]
    if not rows:
        return None
    table = Table(title="parity on this device's kernels (the pack's gates; pack = the packing host's figure)")
    if fleet:
        table.add_column("device")
    for name in ("target", "threads", "verdict", "gate metric here (pack)", "lengths checked", "below the gate"):
        table.add_column(name)
    for rep, r in rows:
        parity = r.device_parity
        verdict = "[green]ok[/green]" if parity.passed else "[red]BELOW GATE[/red]"
        lengths = ", ".join(f"{row.length}{'' if row.passed else '✗'}" for row in parity.by_length) or "-"
        table.add_row(*([rep.device] if fleet else []), r.target, "default" if r.threads is None else str(r.threads),
                      verdict, gate_summary(parity, rep.bundle.get("task", ""), short=True) if parity.error is None
                      else "-", lengths, parity.error or "; ".join(parity.shortfalls) or "-")
    return table


def fastest_lines(report: BenchReport | FleetReport) -> list[str]:
    """``fastest here: tflite-int8 (p50 1.2 ms vs onnx-int8 1.5 ms)`` per device and thread count."""
    reports = report.reports if isinstance(report, FleetReport) else [report]
    lines = []
    for rep in reports:
        where = f"{rep.device}: " if isinstance(report, FleetReport) else ""
        for p in rep.fastest:
            threads = "default" if p.threads is None else p.threads
            lines.append(f"{where}fastest here (threads={threads}): {p.summary()}"
                         + "".join(f"; left out {name}: {why}" for name, why in p.excluded.items()))
    return lines


def noise_warnings(report: BenchReport | FleetReport) -> list[str]:
    """One line per noisy figure, saying why (printed under the tables)."""
    reports = report.reports if isinstance(report, FleetReport) else [report]
    return [f"{rep.device} {r.target} threads={'default' if r.threads is None else r.threads}: {note}"
            for rep in reports for r in rep.results for note in r.notes if note.startswith("noisy:")]
