"""`edgepack tune`: search the recipe's stage knobs for the fastest bundle within an accuracy budget."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from .recipe import load_recipe
from .tune import OBJECTIVES, TuneOptions, TuneSummary, signed_points, parse_duration


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}"


def pareto_table(summary: TuneSummary):
    """Every trial: its knobs, validation accuracy and drop, latency, size, RSS; the front and the winner marked."""
    from rich.table import Table

    knobs = list(dict.fromkeys(k for t in summary.trials for k in t.knobs))
    fell_back = any(t.fallback_steps for t in summary.trials)  # the column only when a precision fallback ran
    table = Table(title=f"Tune trials ({summary.objective} of {summary.primary_target}; budget "
                        f"{summary.max_accuracy_drop * 100:g} pt below the teacher's validation "
                        f"{summary.teacher_val_accuracy * 100:.2f}%; ★ Pareto front)")
    for col in ("trial", *(k.split(".", 1)[1] for k in knobs), "val acc %", "Δ val pt", "latency ms", "size MB",
                "peak RSS MB", "budget", *(("kept float",) if fell_back else ()), "trained", "state"):
        table.add_column(col, justify="left" if col in ("kept float", "trained", "state") else "right",
                         overflow="fold")
    for t in summary.trials:
        values = [f"{t.knobs[k]:.3g}" if isinstance(t.knobs.get(k), float) else str(t.knobs.get(k, "-")) for k in knobs]
        complete = t.state == "complete"
        state = "winner" if t.number == summary.winner else (t.state if not t.error else f"{t.state}: {t.error}")
        table.add_row(f"{t.number}{' ★' if t.pareto else ''}", *values, _pct(t.val_accuracy),
                      signed_points(-t.accuracy_drop) if t.accuracy_drop is not None else "-",
                      f"{t.latency_ms:.3f}" if t.latency_ms is not None else "-",
                      f"{t.size_bytes / 1e6:.2f}" if t.size_bytes else "-",
                      f"{t.peak_rss_mb:.1f}" if t.peak_rss_mb is not None else "-",
                      ("ok" if t.within_budget else "over") if complete else "-",
                      *((_kept_float(t),) if fell_back else ()),
                      ", ".join(t.trained) or "-", state,
                      style="bold green" if t.number == summary.winner else None)
    return table


def _kept_float(trial) -> str:
    """The op groups the trial's precision fallback kept in float, with their op count."""
    if not trial.fallback_steps:
        return "-"
    return (", ".join(trial.float_groups) + f" ({len(trial.float_ops)} ops; all-int8 val "
            f"{_pct(trial.int8_val_accuracy)}%)")


@click.command("tune")
@click.option("--recipe", "recipe_path", required=True, type=click.Path(path_type=Path),
              help="The recipe: teacher, data, stages, targets; its search_space narrows the knobs.")
@click.option("--max-accuracy-drop", type=float, required=True,
              help="Largest validation-accuracy loss against the teacher (fine-tuned reference), e.g. 0.01.")
@click.option("--trials", type=int, default=16, show_default=True, help="Trials in the study (a resumed one included).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="The winner's bundle.")
@click.option("--timeout", "timeout", default=None, metavar="DURATION",
              help="Start no trial after this long (2h, 90m, 45s); the running one finishes.")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="latency", show_default=True,
              help="What the winner minimises within the budget: p50 latency here, or the artifact's size.")
@click.option("--storage", default=None, help="Optuna storage URL (default: sqlite in the work folder).")
@click.option("--study", default=None, help="The study's name in --storage (with --storage).")
@click.option("--work", "work_dir", type=click.Path(path_type=Path), default=None,
              help="Stage cache, study and trial bundles (default: OUT.tune); rerun to resume.")
@click.option("--bench-runs", type=int, default=50, show_default=True, help="Timed runs of each trial's artifact.")
@click.option("--bench-seconds", type=float, default=0.5, show_default=True,
              help="Minimum timed seconds of each trial's benchmark.")
@click.option("--no-fallback", "no_fallback", is_flag=True,
              help="No precision fallback: an int8 primary artifact over the budget keeps every op int8 (by "
                   "default its op groups that add the most error are kept in float until it is within).")
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--archive", is_flag=True, help="Also write OUT.tar.gz.")
@click.option("--json", "as_json", is_flag=True, help="Print the winner's manifest JSON on stdout.")
def tune_cmd(recipe_path: Path, max_accuracy_drop: float, trials: int, out_dir: Path, timeout: str | None,
             objective: str, storage: str | None, study: str | None, work_dir: Path | None, bench_runs: int,
             bench_seconds: float, no_fallback: bool, force: bool, archive: bool, as_json: bool) -> None:
    """Find the fastest bundle whose validation accuracy stays within --max-accuracy-drop of the teacher's.

    Each trial samples the stages' knobs, trains what the stage cache lacks (the teacher trains once), exports
    the recipe's first target and benchmarks it here; the winner is packed to every target (test split, gate).
    Exit 1 with no bundle when no trial meets the budget."""
    from rich.console import Console

    from .recipe_cli import stage_table
    from .tune import run_tune

    options = TuneOptions(max_accuracy_drop=max_accuracy_drop, trials=trials, objective=objective,
                          timeout_s=parse_duration(timeout) if timeout else None, storage=storage, study=study,
                          work_dir=work_dir, bench_runs=bench_runs, bench_seconds=bench_seconds,
                          fallback=not no_fallback)
    options.validate()
    recipe = load_recipe(recipe_path)
    console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)

    def step(message: str) -> None:
        console.print(f"[bold]›[/bold] {message}", highlight=False)

    with contextlib.redirect_stdout(sys.stderr):  # training libraries print to stdout; it is kept for --json
        outcome = run_tune(recipe, out_dir, options, force=force, archive=archive, progress=step)
    if outcome.rows:
        title = "The winner's stages" if outcome.bundle_dir is not None else "The reference stages"
        console.print(stage_table(outcome.rows, outcome.reference_accuracy, title=title))
    if outcome.summary is not None:
        console.print(pareto_table(outcome.summary))
    console.print(("[green]" if outcome.exit_code == 0 else "[red]") + outcome.message, highlight=False)
    if as_json and outcome.manifest is not None:
        click.echo(outcome.manifest.to_json())
    sys.exit(outcome.exit_code)
