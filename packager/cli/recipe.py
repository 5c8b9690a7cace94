"""`edgepack recipe show` and the `edgepack pack --recipe` entry point, with the stage table."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..recipe.spec import load_recipe
from ..training.evaluate import StageRow


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}"


def stage_table(rows: list[StageRow], reference: float | None, title: str = "Recipe stages"):
    """Rich table: one row per stage / artifact, with the test-accuracy change vs the fine-tuned teacher."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col, justify in (("stage", "left"), ("what", "left"), ("params", "right"), ("fp32 MB", "right"),
                         ("file MB", "right"), ("val acc %", "right"), ("test acc %", "right"),
                         ("Δ test pt", "right"), ("latency ms", "right"), ("time s", "right"),
                         ("sub-steps s", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for r in rows:
        delta = "-" if reference is None or r.test_accuracy is None or r.stage == "gate" else \
            f"{(r.test_accuracy - reference) * 100:+.2f}"
        style = "red" if r.stage == "gate" and not r.details.get("passed", True) else None
        latency = "-" if r.latency_ms is None else f"{r.latency_ms:.2f} ± {r.latency_std_ms or 0:.2f}"
        table.add_row(r.stage, r.description, "-" if r.stage == "gate" else f"{r.params / 1e6:.2f}M",
                      "-" if r.stage.startswith(("target", "gate")) else f"{r.fp32_mb:.1f}",
                      "-" if r.artifact_mb is None else f"{r.artifact_mb:.2f}", _pct(r.val_accuracy),
                      _pct(r.test_accuracy), delta, latency, "-" if r.seconds is None else f"{r.seconds:.0f}",
                      step_times(r.step_seconds), style=style)
    return table


def step_times(seconds: dict[str, float]) -> str:
    """'label 3.1 · train 40 · evaluate 1.2': a row's sub-steps and their wall seconds."""
    return " · ".join(f"{name} {value:.2g}" if value < 10 else f"{name} {value:.0f}"
                      for name, value in seconds.items()) or "-"


def search_tables(rows: list[StageRow]):
    """One rich table per distill search: every trial, its parameters, how far it ran and its validation accuracy."""
    from rich.table import Table

    from ..stages.distill.spec import TRAINING_KNOBS

    for r in rows:
        search = r.details.get("search") if r.details else None
        if not isinstance(search, dict) or not search.get("tried"):
            continue
        params = [k.option for k in TRAINING_KNOBS if any(k.option in t for t in search["tried"])]
        table = Table(title=f"Distillation search ({search['trials']} trials, pruner {search['pruner']}: "
                            f"{search['pruned']} stopped early)")
        for col in ("trial", *params, "epochs run", "val acc %", "state"):
            table.add_column(col, justify="left" if col == "state" else "right")
        for t in search["tried"]:
            values = [f"{t[k]:.3g}" if isinstance(t.get(k), float) else str(t.get(k, "-")) for k in params]
            state = t["state"] + (" (best)" if t["trial"] == search.get("best_trial") else "")
            table.add_row(str(t["trial"]), *values, str(t.get("epochs_run") or "-"), _pct(t.get("val_accuracy")), state)
        yield table


def progress_printers(enabled: bool = True):
    """(step, on_row): progress lines with the clock time and the time since the start, each written to stderr
    and flushed at once as plain text, so a pipe, a log file or a remote shell reads them live."""
    started = time.monotonic()

    def stamp() -> str:
        elapsed = int(time.monotonic() - started)
        return f"({time.strftime('%H:%M:%S')}, +{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d})"

    def line(text: str) -> None:
        if enabled:
            print(text, file=sys.stderr, flush=True)

    def step(message: str) -> None:
        line(f"› {message} {stamp()}")

    def on_row(row: StageRow) -> None:
        acc = f"val {_pct(row.val_accuracy)}% test {_pct(row.test_accuracy)}%"
        line(f"  ✓ {row.stage}: {row.description} — {row.params / 1e6:.2f}M params, {acc} {stamp()}")

    return step, on_row


def pack_from_recipe(recipe_path: Path | None, out_dir: Path, *, force: bool, archive: bool, as_json: bool = False,
                     progress: bool | None = None, search_trials: int | None = None,
                     overrides: list[tuple[str, Any]] | None = None) -> int:
    """What `edgepack pack --recipe FILE -o OUT` runs; returns the exit code (EdgepackError for bad input).

    Progress and the stage table go to stderr; with ``as_json`` stdout carries only the manifest JSON
    (stage rows included), so it can be piped."""
    from rich.console import Console

    from ..distributed import current, is_main_process
    from ..recipe.run import run_recipe

    console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)  # logs stay readable
    recipe = load_recipe(recipe_path, overrides)
    if search_trials is not None:
        enable_search(recipe, search_trials)
    # progress lines go to stderr with --json too (stdout carries the manifest alone): a long run on a remote
    # machine must say where it is; only the training bars stay off there
    progress = True if progress is None else progress
    step, on_row = progress_printers(progress)

    # training libraries print their logs to stdout; stdout is kept for the --json manifest alone
    with contextlib.redirect_stdout(sys.stderr):
        outcome = run_recipe(recipe, Path(out_dir), force=force, archive=archive, progress=step, on_row=on_row,
                             show_bars=progress and not as_json)
    if not is_main_process():  # under torchrun / accelerate launch rank 0 speaks for the run
        if outcome.exit_code != 0:
            console.print(f"[red]rank {current().rank}: {outcome.message}")
        return outcome.exit_code
    console.print(stage_table(outcome.rows, outcome.reference_accuracy))
    for table in search_tables(outcome.rows):
        console.print(table)
    console.print(("[green]" if outcome.exit_code == 0 else "[red]") + outcome.message)
    if as_json and outcome.manifest is not None:
        click.echo(outcome.manifest.to_json())
    return outcome.exit_code


def enable_search(recipe, trials: int) -> None:
    """``--search TRIALS``: turn on the hyper-parameter search of every distill stage (ranges as in the recipe)."""
    from ..errors import EdgepackError
    from ..stages.distill.spec import SearchSpec

    if trials < 1:
        raise EdgepackError(f"--search {trials}: needs at least 1 trial")
    stages = [s for s in recipe.stages if s.kind == "distill"]
    if not stages:
        raise EdgepackError("--search: the recipe has no distill stage to search")
    for stage in stages:
        stage.spec.search = dataclasses.replace(stage.spec.search or SearchSpec(), trials=trials)


@click.group("recipe")
def recipe() -> None:
    """Compression recipes (YAML): fine-tune, distil, prune, trim vocabulary, then pack."""


@recipe.command("show")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key (dotted path, YAML value), as `edgepack pack --set` would.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON instead of YAML.")
def show(file: Path, sets: tuple[str, ...], as_json: bool) -> None:
    """Validate FILE and print it with every default filled in."""
    import yaml

    from ..recipe.flags import cli_overrides

    overrides = cli_overrides(sets=sets, data_paths={}, data_columns={}, gate_max_drop=None, explicit={})
    data = load_recipe(file, overrides).to_dict()
    data.pop("base_dir", None)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100).rstrip())
