"""`edgepack report`: bundles and bench reports joined into the accuracy–latency–size trade-off."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import click

from ..errors import EdgepackError
from ..length_plot import length_markdown, length_series, plot_latency_vs_length
from ..tradeoff import collect_points, markdown_table, plot_tradeoff, points_as_dicts


def _reports(paths: list[Path]) -> list:
    from device_bench.report import FleetReport, load_report

    out = []
    for path in paths:
        try:
            loaded = load_report(path)
        except (OSError, ValueError):
            continue  # collect_points already refused unreadable reports
        out.extend(loaded.reports if isinstance(loaded, FleetReport) else [loaded])
    return out


@click.command("report")
@click.argument("items", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write the accuracy-vs-latency plot (marker area ∝ size) to this PNG.")
@click.option("--length-plot", "length_plot_path", type=click.Path(path_type=Path), default=None,
              help="Write the latency-vs-input-length plot (one line per target, from the per-length tables) to this PNG.")
@click.option("--markdown", "md_path", type=click.Path(path_type=Path), default=None, help="Write the table as Markdown.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def report(items: tuple[Path, ...], plot_path: Path | None, length_plot_path: Path | None, md_path: Path | None,
           as_json: bool) -> None:
    """Compare bundles (folders) and bench reports (JSON from `edgepack bench --out`).

    Reports are matched to bundles by the bundle's folder name, so one row per
    stage × target carries size, accuracy/parity, latency, memory and energy.
    --plot needs matplotlib (in the pack extra); the table and --json do not.
    """
    if plot_path and importlib.util.find_spec("matplotlib") is None:
        raise EdgepackError("--plot needs matplotlib, which is not installed here (pip install 'matplotlib>=3.8,<4'); "
                            "without --plot the table still comes out")
    bundles = [p for p in items if p.is_dir()]
    reports = [p for p in items if p.is_file()]
    missing = [p for p in items if not p.exists()]
    if missing:
        raise EdgepackError(f"{missing[0]}: no such bundle folder or report file")
    points = collect_points(bundles, reports)
    if not points:
        raise EdgepackError("no runnable targets in the given bundles/reports")
    series = length_series(_reports(reports))
    if as_json:
        # one shape whatever the inputs: the rows, and the latency-by-length series (empty without reports)
        click.echo(json.dumps({"points": points_as_dicts(points), "latency_vs_length": [asdict(s) for s in series]},
                              indent=2))
    else:
        click.echo(markdown_table(points), nl=False)
        if series:
            click.echo("\nLatency by input length (p50 ms):\n\n" + length_markdown(series), nl=False)
    if md_path:
        md_path.write_text(markdown_table(points) + ("\n" + length_markdown(series) if series else ""))
    if length_plot_path:
        plot_latency_vs_length(series, length_plot_path)
        click.echo(f"length plot: {length_plot_path}", err=True)
    if plot_path:
        plot_tradeoff(points, plot_path)
        click.echo(f"plot: {plot_path}", err=True)
