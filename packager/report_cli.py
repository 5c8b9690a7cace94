"""`edgepack report`: bundles and bench reports joined into the accuracy–latency–size trade-off."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import click

from .errors import EdgepackError
from .tradeoff import collect_points, markdown_table, plot_tradeoff, points_as_dicts


@click.command("report")
@click.argument("items", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write the accuracy-vs-latency plot (marker area ∝ size) to this PNG.")
@click.option("--markdown", "md_path", type=click.Path(path_type=Path), default=None, help="Write the table as Markdown.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def report(items: tuple[Path, ...], plot_path: Path | None, md_path: Path | None, as_json: bool) -> None:
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
    if as_json:
        click.echo(json.dumps(points_as_dicts(points), indent=2))
    else:
        click.echo(markdown_table(points), nl=False)
    if md_path:
        md_path.write_text(markdown_table(points))
    if plot_path:
        plot_tradeoff(points, plot_path)
        click.echo(f"plot: {plot_path}", err=True)
