"""Latency against input length, per target: the bench reports' per-length tables as a table and a plot.

Each series is one target × device × threads; its points are the p50 at each
timed length, and its real-length p50 is drawn at the mean real length of the
texts it ran (what a user's inputs cost, against what padding would cost).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from device_bench.report import BenchReport

from .errors import EdgepackError


@dataclass
class LengthSeries:
    label: str  # "target (device, threads)"
    lengths: list[int] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    padded_to: list[int | None] = field(default_factory=list)
    real_p50_ms: float | None = None
    real_mean_length: float | None = None
    noisy: bool = False


def length_series(reports: list[BenchReport]) -> list[LengthSeries]:
    out = []
    for report in reports:
        for r in report.results:
            if r.status != "ok" or not r.by_length:
                continue
            threads = "default" if r.threads is None else str(r.threads)
            s = LengthSeries(label=f"{r.target} ({report.device}, {threads} thr)",
                             lengths=[row.length for row in r.by_length], p50_ms=[row.p50 for row in r.by_length],
                             padded_to=[row.padded_to for row in r.by_length],
                             noisy=bool((r.noise and r.noise.noisy) or any(row.noise and row.noise.noisy
                                                                          for row in r.by_length)))
            if r.latency_inputs == "real-length" and r.latency_ms is not None and r.input_lengths is not None:
                s.real_p50_ms, s.real_mean_length = r.latency_ms.p50, r.input_lengths.mean
            out.append(s)
    return out


def length_markdown(series: list[LengthSeries]) -> str:
    lengths = sorted({n for s in series for n in s.lengths})
    lines = ["| target | real-length p50 ms (mean tokens) | " + " | ".join(f"{n} tok" for n in lengths) + " |",
             "|---|---:|" + "---:|" * len(lengths)]
    for s in series:
        cells = dict(zip(s.lengths, s.p50_ms))
        real = f"{s.real_p50_ms:.3f} ({s.real_mean_length:.1f})" if s.real_p50_ms is not None else "-"
        lines.append(f"| {s.label}{' (noisy)' if s.noisy else ''} | {real} | "
                     + " | ".join(f"{cells[n]:.3f}" if n in cells else "-" for n in lengths) + " |")
    return "\n".join(lines) + "\n"


def plot_latency_vs_length(series: list[LengthSeries], path: Path,
                           title: str = "p50 latency vs input length (◆ real-length p50 at the texts' mean length)") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not series:
        raise EdgepackError("nothing to plot: no bench result has a per-length table (edgepack bench, minor 1 reports)")
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for s in series:
        line, = ax.plot(s.lengths, s.p50_ms, marker="o", label=s.label + (" (noisy)" if s.noisy else ""),
                        linestyle="--" if s.noisy else "-")
        if s.real_p50_ms is not None:
            ax.plot([s.real_mean_length], [s.real_p50_ms], marker="D", markersize=8, color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input length (tokens)")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
