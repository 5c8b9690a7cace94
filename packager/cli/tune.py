"""`edgepack tune`: search the recipe's stage knobs for the fastest bundle within an accuracy budget."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from ..errors import EdgepackError
from ..recipe.spec import load_recipe
from ..tune.options import OBJECTIVES, BenchDevice, TuneOptions, parse_duration
from ..tune.records import TuneSummary, signed_points


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}"


def _energy_cell(t) -> str:
    if t.energy_mj is None:
        return "-"
    return f"{t.energy_mj:.2f}{' (est.)' if t.energy_kind == 'estimated' else ''}"


def pareto_table(summary: TuneSummary):
    """Every trial: its knobs, validation accuracy and drop, latency, size, RSS; the front and the winner marked."""
    from rich.table import Table

    knobs = list(dict.fromkeys(k for t in summary.trials for k in t.knobs))
    fell_back = any(t.fallback_steps for t in summary.trials)  # the column only when a precision fallback ran
    table = Table(title=f"Tune trials ({summary.objective} of {summary.primary_target} on {summary.device}; budget "
                        f"{summary.max_accuracy_drop * 100:g} pt below the teacher's validation "
                        f"{summary.teacher_val_accuracy * 100:.2f}%; ★ Pareto front)")
    energy = any(t.energy_mj is not None for t in summary.trials)
    for col in ("trial", *(k.split(".", 1)[1] for k in knobs), "val acc %", "Δ val pt", "latency ms", "size MB",
                "peak RSS MB", *(("energy mJ",) if energy else ()), "budget", *(("kept float",) if fell_back else ()),
                "trained", "state"):
        table.add_column(col, justify="left" if col in ("kept float", "trained", "state") else "right",
                         overflow="fold")
    for t in summary.trials:
        values = [f"{t.knobs[k]:.3g}" if isinstance(t.knobs.get(k), float) else str(t.knobs.get(k, "-")) for k in knobs]
        complete = t.state == "complete"
        state = t.state if not t.error else f"{t.state}: {t.error}"
        state = "winner" if t.number == summary.winner else "packed" if t.number == summary.packed else state
        table.add_row(f"{t.number}{' ★' if t.pareto else ''}", *values, _pct(t.val_accuracy),
                      signed_points(-t.accuracy_drop) if t.accuracy_drop is not None else "-",
                      f"{t.latency_ms:.3f}" if t.latency_ms is not None else "-",
                      f"{t.size_bytes / 1e6:.2f}" if t.size_bytes else "-",
                      f"{t.peak_rss_mb:.1f}" if t.peak_rss_mb is not None else "-",
                      *((_energy_cell(t),) if energy else ()),
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


def bench_device(url: str | None, token: str | None, token_file: Path | None, devices_file: Path | None,
                 name: str | None, fingerprint: str | None = None) -> BenchDevice | None:
    """The agent of --device / --token(-file), or --devices + --device-name; None: benchmark here."""
    from device_bench.client import AgentError, read_token
    from device_bench.fleet import FleetError, load_devices

    if url and devices_file:
        raise EdgepackError("give --device or --devices, not both")
    if devices_file is not None:
        if token or token_file:
            raise EdgepackError("--token/--token-file go with --device; a devices file names each device's token")
        if fingerprint:
            raise EdgepackError("--fingerprint goes with --device; a devices file keeps each device's fingerprint")
        try:
            fleet = load_devices(devices_file)
        except FleetError as exc:
            raise EdgepackError(str(exc)) from None
        if name is None:
            raise EdgepackError(f"--devices needs --device-name (one of: {', '.join(d.name for d in fleet)}): a tune "
                                "ranks trials by one device's latency")
        spec = next((d for d in fleet if d.name == name), None)
        if spec is None:
            raise EdgepackError(f"--device-name {name!r}: not in {devices_file} "
                                f"(devices: {', '.join(d.name for d in fleet)})")
        return BenchDevice(name=spec.name, url=spec.url, token=spec.token, fingerprint=spec.fingerprint)
    if name is not None:
        raise EdgepackError("--device-name needs --devices")
    if url is None:
        if token or token_file:
            raise EdgepackError("--token/--token-file need --device")
        if fingerprint:
            raise EdgepackError("--fingerprint needs --device")
        return None
    try:
        return BenchDevice(name=url, url=url, token=read_token(token, token_file), fingerprint=fingerprint)
    except AgentError as exc:
        raise EdgepackError(str(exc)) from None


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
              help="What the winner minimises within the budget: p50 latency, the artifact's size, or energy per "
                   "inference (measured where the device has a meter, else estimated from CPU time).")
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
@click.option("--device", "device_url", default=None,
              help="Benchmark each trial on the edgepack-agent at this URL (the device the bundle is for).")
@click.option("--token", default=None, help="The agent's token (prefer --token-file).")
@click.option("--token-file", type=click.Path(path_type=Path), default=None, help="File holding the agent's token.")
@click.option("--fingerprint", default=None,
              help="With an https --device: the agent's certificate SHA-256 fingerprint (printed at its start), pinned.")
@click.option("--devices", "devices_file", type=click.Path(path_type=Path), default=None,
              help="devices.yaml of a fleet; with --device-name, benchmark on that device.")
@click.option("--device-name", default=None, help="The device of --devices to benchmark on.")
@click.option("--pack-trial", type=int, default=None,
              help="Run no trial: pack this scored trial of the study (another point of the front).")
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--archive", is_flag=True, help="Also write OUT.tar.gz.")
@click.option("--json", "as_json", is_flag=True, help="Print the winner's manifest JSON on stdout.")
def tune_cmd(recipe_path: Path, max_accuracy_drop: float, trials: int, out_dir: Path, timeout: str | None,
             objective: str, storage: str | None, study: str | None, work_dir: Path | None, bench_runs: int,
             bench_seconds: float, no_fallback: bool, device_url: str | None, token: str | None,
             token_file: Path | None, devices_file: Path | None, device_name: str | None, pack_trial: int | None,
             force: bool, archive: bool, as_json: bool, fingerprint: str | None = None) -> None:
    """Find the fastest bundle whose validation accuracy stays within --max-accuracy-drop of the teacher's.

    Each trial samples the stages' knobs, trains what the stage cache lacks (the teacher trains once), exports
    the recipe's first target and benchmarks it here or on an agent (--device, or --devices with --device-name);
    the winner is packed to every target (test split, gate). Exit 1 with no bundle when no trial meets the budget."""
    from rich.console import Console

    from ..tune.run import run_tune
    from .recipe import stage_table

    options = TuneOptions(max_accuracy_drop=max_accuracy_drop, trials=trials, objective=objective,
                          timeout_s=parse_duration(timeout) if timeout else None, storage=storage, study=study,
                          work_dir=work_dir, bench_runs=bench_runs, bench_seconds=bench_seconds,
                          fallback=not no_fallback,
                          device=bench_device(device_url, token, token_file, devices_file, device_name, fingerprint),
                          pack_trial=pack_trial)
    options.validate()
    recipe = load_recipe(recipe_path)
    console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)

    from .recipe import progress_printers

    step, _ = progress_printers()

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
