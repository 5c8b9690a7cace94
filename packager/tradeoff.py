"""The accuracy–latency–size trade-off across compression stages and targets: rows, table, plot.

A point joins what the bundle knows (size, parity, task accuracy) with what the
device measured (latency, memory, energy) for one target of one bundle.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from device_bench.manifest import Manifest
from device_bench.report import BenchReport, FleetReport, TargetResult, load_report

from .errors import EdgepackError

ENERGY_ABBREV = {"estimated": "est.", "measured": "meas."}


@dataclass
class TradeoffPoint:
    stage: str  # bundle name (a compression stage) or a row label
    target: str
    precision: str
    size_mb: float | None
    accuracy: float | None = None  # task accuracy on labelled data
    mean_cosine: float | None = None  # parity with the fp32 reference
    p50_ms: float | None = None
    std_ms: float | None = None
    peak_rss_mb: float | None = None
    mj_per_inference: float | None = None
    energy_kind: str | None = None
    device: str | None = None
    threads: int | None = None

    @property
    def quality(self) -> float | None:
        return self.accuracy if self.accuracy is not None else self.mean_cosine


def _bench_rows(reports: Iterable[BenchReport]) -> dict[tuple[str, str], list[tuple[BenchReport, TargetResult]]]:
    rows: dict[tuple[str, str], list[tuple[BenchReport, TargetResult]]] = {}
    for report in reports:
        for result in report.results:
            if result.status == "ok":
                rows.setdefault((report.bundle.get("name", ""), result.target), []).append((report, result))
    return rows


def collect_points(bundles: list[Path], report_paths: list[Path]) -> list[TradeoffPoint]:
    """One point per (bundle, target, device, threads); bundles without a report still give size/quality."""
    reports: list[BenchReport] = []
    for path in report_paths:
        try:
            loaded = load_report(path)
        except (OSError, ValueError) as exc:
            raise EdgepackError(f"{path}: not a bench report ({exc})") from None
        reports.extend(loaded.reports if isinstance(loaded, FleetReport) else [loaded])
    bench = _bench_rows(reports)
    points: list[TradeoffPoint] = []
    seen: set[tuple[str, str]] = set()
    for bundle in bundles:
        manifest = Manifest.load(bundle)
        for entry in manifest.runnable_targets():
            key = (Path(bundle).name, entry.name)
            seen.add(key)
            base = dict(stage=key[0], target=entry.name, precision=entry.precision,
                        size_mb=entry.size_bytes / 1e6 if entry.size_bytes else None,
                        accuracy=entry.parity.accuracy if entry.parity else None,
                        mean_cosine=entry.parity.mean_cosine if entry.parity else None)
            measured = bench.get(key, [])
            points.extend(_with_measurement(base, r, res) for r, res in measured) if measured else points.append(
                TradeoffPoint(**base))
    for (stage, target), measured in bench.items():  # reports whose bundle was not given
        if (stage, target) not in seen:
            for report, result in measured:
                base = dict(stage=stage, target=target, precision=result.precision,
                            size_mb=result.file_size_bytes / 1e6 if result.file_size_bytes else None)
                points.append(_with_measurement(base, report, result))
    return points


def _with_measurement(base: dict[str, Any], report: BenchReport, result: TargetResult) -> TradeoffPoint:
    lat = result.latency_ms
    energy = result.energy
    return TradeoffPoint(**base, p50_ms=lat.p50 if lat else None, std_ms=lat.std if lat else None,
                         peak_rss_mb=result.peak_rss_mb, device=report.device, threads=result.threads,
                         mj_per_inference=energy.mj_above_idle_per_inference if energy else None,
                         energy_kind=energy.kind if energy else None)


def _f(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def markdown_table(points: list[TradeoffPoint]) -> str:
    head = "| stage | target | precision | size MB | accuracy | cosine vs fp32 | p50 ± std ms | peak RSS MB | mJ/inf | device |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in points:
        energy = f"{p.mj_per_inference:.1f} ({ENERGY_ABBREV.get(p.energy_kind, p.energy_kind)})" if p.mj_per_inference is not None else "–"
        latency = f"{p.p50_ms:.2f} ± {p.std_ms:.2f}" if p.p50_ms is not None else "–"
        lines.append(f"| {p.stage} | {p.target} | {p.precision} | {_f(p.size_mb, '.1f')} | {_f(p.accuracy, '.4f')} | "
                     f"{_f(p.mean_cosine, '.4f')} | {latency} | {_f(p.peak_rss_mb, '.0f')} | {energy} | "
                     f"{p.device or '–'}{'' if p.threads is None else f' ×{p.threads}t'} |")
    return "\n".join(lines) + "\n"


def plot_tradeoff(points: list[TradeoffPoint], path: Path, title: str = "accuracy–latency–size trade-off (marker area ∝ size)") -> Path:
    """Quality (accuracy, else cosine to fp32) against p50 latency; marker area proportional to model size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawable = [p for p in points if p.p50_ms is not None and p.quality is not None and p.size_mb]
    if not drawable:
        raise EdgepackError("nothing to plot: need points with both a latency (bench report) and accuracy/parity")
    use_accuracy = all(p.accuracy is not None for p in drawable)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    stages = list(dict.fromkeys(p.stage for p in drawable))
    colors = plt.get_cmap("tab10")
    largest = max(p.size_mb for p in drawable)
    for p in drawable:
        y = (p.accuracy if use_accuracy else p.mean_cosine) * (100 if use_accuracy else 1)
        ax.scatter(p.p50_ms, y, s=60 + 1400 * p.size_mb / largest, alpha=0.55, color=colors(stages.index(p.stage) % 10),
                   edgecolors="black", linewidths=0.6)
        ax.annotate(f"{p.stage}\n{p.target}", (p.p50_ms, y), fontsize=7, ha="center", va="center")
    ax.set_xlabel("latency p50 (ms, batch 1)")
    ax.set_ylabel("test accuracy (%)" if use_accuracy else "mean cosine vs fp32 reference")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def points_as_dicts(points: list[TradeoffPoint]) -> list[dict[str, Any]]:
    return [asdict(p) for p in points]
