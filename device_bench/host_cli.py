"""`edgepack bench` and `edgepack devices`: bench a bundle here, on one agent, or on a fleet.

The lead adds them to the `edgepack` group (``main.add_command(bench)``,
``main.add_command(devices)``). Progress goes to stderr, the table (or JSON
with ``--json``) to stdout. Exit status: 0 when every measurement ran, 1 when
a target failed or a device was unreachable (the report still comes out),
2 on bad input (one line on stderr).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from .bench import BenchError, BenchOptions, load_bundle, run_bench
from .client import AgentError, read_token
from .energy import EnergyConfig
from .fleet import DeviceSpec, FleetError, add_device, bench_fleet, check_devices, load_devices
from .tls import FingerprintError, normalize_fingerprint, presented_fingerprint
from .report import (BenchReport, FleetReport, ReportError, fastest_lines, noise_warnings, render_length_table,
                     render_parity_table, render_table)

EXIT_FAILURES = 1
EXIT_USAGE = 2


class CliError(click.ClickException):
    """One line on stderr, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"edgepack: error: {self.format_message()}", err=True)


def parse_threads(value: str | None) -> list[int | None]:
    if not value:
        return [None]
    out: list[int | None] = []
    for part in value.split(","):
        part = part.strip()
        if part == "default":
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise CliError(f"--threads {value!r}: expected positive integers or 'default', comma-separated (e.g. 1,2,4)")
    return out


def _console(stderr: bool):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else max(160, shutil.get_terminal_size((160, 24)).columns)
    return Console(stderr=stderr, width=width, soft_wrap=False)


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    """Yields update(key, done, total, label); a rich bar per key (device or 'local') on stderr."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.fields[key]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=_console(True), transient=False) as bar:
        def update(key: str, done: int, total: int, label: str) -> None:
            if key not in tasks:
                tasks[key] = bar.add_task(label, total=total or None, key=key)
            bar.update(tasks[key], completed=done, total=total or None, description=label)

        yield update


def _emit(report: BenchReport | FleetReport, as_json: bool, out: Path | None) -> None:
    if out is not None:
        try:
            out.write_text(report.to_json() + "\n")
        except OSError as exc:
            raise CliError(f"--out {out}: {exc.strerror or exc}") from None
    if as_json:
        click.echo(report.to_json())
    else:
        console = _console(False)
        tables = [t for t in (render_table(report), render_length_table(report), render_parity_table(report)) if t]
        if not sys.stdout.isatty():  # a log or a pipe: every table at its natural width, no cell folded
            from rich.measure import Measurement

            unbounded = console.options.update_width(10_000)
            console.width = max([console.width] + [Measurement.get(console, unbounded, t).maximum for t in tables])
        for table in tables:
            console.print(table)
        for line in fastest_lines(report):
            console.print(line, highlight=False)
        for line in noise_warnings(report):
            console.print(f"[yellow]warning:[/] {line}", highlight=False)
        for r in report.below_parity:
            console.print(f"[red]warning:[/] {r.target} threads={'default' if r.threads is None else r.threads}: "
                          f"below its parity gate on this device: "
                          f"{r.device_parity.error or '; '.join(r.device_parity.shortfalls)}", highlight=False)


def _default(name: str) -> Any:
    """A BenchOptions default, so the flags cannot drift from the one definition of the options."""
    return next(f.default for f in dataclasses.fields(BenchOptions) if f.name == name)


@click.command("bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--targets", help="Comma-separated target names (default: every target in the bundle).")
@click.option("--runs", type=int, default=_default("runs"), show_default=True, help="Minimum timed runs.")
@click.option("--min-seconds", type=float, default=_default("min_seconds"), show_default=True, help="Minimum timed duration.")
@click.option("--warmup", type=int, default=_default("warmup"), show_default=True, help="Untimed runs before timing.")
@click.option("--threads", help="Thread sweep, e.g. 1,2,4 ('default' = the runtime's choice).")
@click.option("--timeout", "timeout_s", type=float, help="Per-worker time limit in seconds (default 600).")
@click.option("--memory-limit-mb", type=int, help="Per-worker address-space limit; 0 = none (default: the device's RAM).")
@click.option("--no-pin", is_flag=True, help="Do not pin threads to CPUs.")
@click.option("--power-cmd", help="Local runs: a command printing the current power in watts (external meter).")
@click.option("--power-profile", help="Local runs: power profile name or JSON file for the CPU-time estimate.")
@click.option("--energy-backend", help="Local runs: force an energy backend (rapl, hwmon, iio, vcgencmd, battery, command, estimate).")
@click.option("--idle-seconds", type=float, default=1.0, show_default=True, help="Local runs: idle power baseline duration.")
@click.option("--device", "device_url", help="Bench on the agent at this URL instead of here.")
@click.option("--token", help="Agent token (prefer --token-file).")
@click.option("--token-file", type=click.Path(path_type=Path), help="File holding the agent token.")
@click.option("--fingerprint", help="With an https --device: the agent's certificate SHA-256 fingerprint (it prints it "
                                    "at start); the connection is refused unless the agent presents that certificate.")
@click.option("--devices", "devices_file", type=click.Path(path_type=Path), help="devices.yaml: bench on every device listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--out", type=click.Path(path_type=Path), help="Also save the JSON report here.")
@click.option("--texts", "texts_path", type=click.Path(path_type=Path),
              help="Time on these texts (one per line, tokenized here with the bundle's tokenizer) instead of the "
                   "bundle's own.")
@click.option("--strict", is_flag=True, help="Exit 1 when a target misses its parity gate on the device (every "
                                             "bench recomputes the pack's parity with the device's kernels).")
@click.option("--browser", is_flag=True, help="Local runs: also time the web artifacts (.onnx with onnxruntime-web, "
                                              "MediaPipe .tflite) in headless Chromium, WASM SIMD, threads as --threads, "
                                              "on the same texts; rows in the same table (scripts/setup_web.sh).")
def bench(bundle: Path, targets: str | None, runs: int, min_seconds: float, warmup: int, threads: str | None,
          timeout_s: float | None, memory_limit_mb: int | None, no_pin: bool, power_cmd: str | None,
          power_profile: str | None, energy_backend: str | None, idle_seconds: float, device_url: str | None,
          token: str | None, token_file: Path | None, devices_file: Path | None, as_json: bool, out: Path | None,
          texts_path: Path | None = None, strict: bool = False, fingerprint: str | None = None,
          browser: bool = False, browser_texts: list[str] | None = None) -> None:
    """Benchmark BUNDLE's artifacts: latency (over the texts' real lengths, and per bucket), throughput, memory,
    energy, per target and thread count."""
    if browser and (device_url or devices_file):
        raise CliError("--browser times the web artifacts in this machine's Chromium: not with --device/--devices")
    if texts_path is not None:
        from .texts import TextsError, bundle_with_texts, read_lines

        try:
            _check_bundle_locally(bundle)
            with bundle_with_texts(bundle, texts_path) as view:
                return bench.callback(view, targets, runs, min_seconds, warmup, threads, timeout_s, memory_limit_mb,
                                      no_pin, power_cmd, power_profile, energy_backend, idle_seconds, device_url, token,
                                      token_file, devices_file, as_json, out, None, strict, fingerprint=fingerprint,
                                      browser=browser, browser_texts=read_lines(texts_path) if browser else None)
        except (TextsError, BenchError) as exc:
            raise CliError(str(exc)) from None
    if browser:
        from .web import browser_problem

        problem = browser_problem()
        if problem:
            raise CliError(f"--browser: {problem}")
    opts = BenchOptions(targets=[t.strip() for t in targets.split(",") if t.strip()] if targets else None,
                        runs=runs, min_seconds=min_seconds, warmup=warmup, threads=parse_threads(threads), pin=not no_pin)
    if timeout_s is not None:
        opts.timeout_s = timeout_s
    if memory_limit_mb is not None:
        opts.memory_limit_mb = memory_limit_mb or None
    try:
        opts.validate()
    except BenchError as exc:
        raise CliError(str(exc)) from None
    if device_url and devices_file:
        raise CliError("give --device or --devices, not both")
    remote = bool(device_url or devices_file)
    if remote and (power_cmd or power_profile or energy_backend):
        raise CliError("--power-cmd/--power-profile/--energy-backend apply to local runs; configure them on the agent (edgepack-agent serve)")
    if not remote and (token or token_file):
        raise CliError("--token/--token-file need --device")
    if fingerprint and not device_url:
        raise CliError("--fingerprint goes with --device (a devices file keeps each device's fingerprint)")
    # the limits go to an agent only when set here (else the agent's own apply), and can only lower the agent's
    limits = [name for name, given in (("timeout_s", timeout_s), ("memory_limit_mb", memory_limit_mb)) if given]
    report: BenchReport | FleetReport
    try:
        _check_bundle_locally(bundle)
        fleet = load_devices(devices_file) if devices_file else None
        spec = DeviceSpec(name=device_url, url=device_url, token=read_token(token, token_file),
                          fingerprint=fingerprint) if device_url else None
        with _progress_bar(True) as update:
            if fleet is not None:
                report = bench_fleet(bundle, fleet, opts.to_remote(limits), progress=update)
            elif spec is not None:
                report = spec.client().bench(
                    bundle, opts.to_remote(limits), progress=lambda d, n, label: update(spec.url, d, n, label))
            else:
                energy = EnergyConfig(power_cmd=power_cmd, power_profile=power_profile, backend=energy_backend,
                                      idle_seconds=idle_seconds)
                report = run_bench(bundle, opts, progress=lambda d, n, label: update("local", d, n, label), energy=energy)
        if browser:
            report.results.extend(_browser_rows(bundle, opts, browser_texts))
    except (BenchError, AgentError, FleetError, ReportError) as exc:
        raise CliError(str(exc)) from None
    _emit(report, as_json, out)
    failed = report.failed or (isinstance(report, FleetReport) and report.errors)
    if failed or (strict and report.below_parity):
        sys.exit(EXIT_FAILURES)


def _browser_rows(bundle: Path, opts: BenchOptions, texts: list[str] | None) -> list:
    """The web artifacts timed in headless Chromium on ``texts`` (default: the bundle's own sample texts)."""
    from .web.bench import bench_in_browser

    if texts is None:
        samples = bundle / "samples.txt"
        if not samples.is_file():
            raise BenchError(f"--browser: {bundle} has no samples.txt (give --texts FILE)")
        texts = [t.strip() for t in samples.read_text(encoding="utf-8").splitlines() if t.strip()]
    return bench_in_browser(bundle, texts, opts.threads, opts.runs, opts.warmup, opts.targets)


def _check_bundle_locally(bundle: Path) -> None:
    """Catch 'not a bundle' here rather than after an upload."""
    if bundle.is_dir():
        load_bundle(bundle)
    elif not bundle.is_file():
        raise BenchError(f"{bundle}: no such bundle folder or archive")


@click.group("devices")
def devices() -> None:
    """Manage the devices of a fleet (devices.yaml)."""


@devices.command("check")
@click.argument("devices_file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check(devices_file: Path, as_json: bool) -> None:
    """Reachability, agent and runtime versions, and energy/thermal sensors of every device."""
    try:
        specs = load_devices(devices_file)
    except FleetError as exc:
        raise CliError(str(exc)) from None
    rows = check_devices(specs)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        from rich.table import Table

        table = Table(title="edgepack devices")
        for col in ("device", "url", "status", "agent", "runtimes", "energy", "thermal zones"):
            table.add_column(col)
        for r in rows:
            if not r["reachable"]:
                table.add_row(r["name"], r["url"], f"[red]unreachable[/red]: {r['error']}", "", "", "", "")
                continue
            table.add_row(r["name"], r["url"], "[green]ok[/green]", f"{r['agent_version']} (api {r['api_version']})",
                          ", ".join(r["runtimes"]) or "none", f"{r['energy']['source']} ({r['energy']['kind']})",
                          ", ".join(r["thermal_zones"]) or "none")
        _console(False).print(table)
    if not all(r["reachable"] for r in rows):
        sys.exit(EXIT_FAILURES)


def _interactive() -> bool:
    return sys.stdin.isatty()


@devices.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--fingerprint", help="The agent's certificate SHA-256 fingerprint, as it printed it at start (hex, colons "
                                    "optional). Without it, the fingerprint the agent presents now is shown for you to "
                                    "confirm (trust on first use).")
@click.option("--yes", is_flag=True, help="Trust the fingerprint presented now without asking.")
@click.option("--token-file", help="The file holding this agent's token (kept in devices.yaml as given).")
@click.option("--file", "devices_file", type=click.Path(path_type=Path), default=Path("devices.yaml"),
              show_default=True, help="The devices file to add to (made if absent).")
def add(name: str, url: str, fingerprint: str | None, yes: bool, token_file: str | None, devices_file: Path) -> None:
    """Add the agent at URL as NAME to devices.yaml, pinning its certificate (or update NAME's entry)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CliError(f"{url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"{url!r}: not an http(s) URL of an agent (e.g. https://pi.local:8765)")
    pin = None
    if parts.scheme == "http":
        if fingerprint:
            raise CliError(f"{url}: a fingerprint pins an https:// agent's certificate; this URL is plain http")
        click.echo(f"warning: {url} is plain HTTP (an agent started with --insecure-http): the token and the bundles "
                   "cross the network in the clear", err=True)
    else:
        try:
            pin = normalize_fingerprint(fingerprint) if fingerprint else None
        except FingerprintError as exc:
            raise CliError(f"--fingerprint: {exc}") from None
        try:
            presented = presented_fingerprint(parts.hostname, port or 443)
        except OSError as exc:
            presented = None
            if pin is None:
                raise CliError(f"{url}: cannot reach the agent to read its certificate ({exc}); give --fingerprint "
                               "(the agent prints it at start)") from None
            click.echo(f"warning: {url} is not reachable now ({exc}); pinned the fingerprint given", err=True)
        if pin is not None and presented is not None and presented != pin:
            raise CliError(f"{url}: refused: the agent presents fingerprint {presented}, not the {pin} given; "
                           "check it on the device (something else may be answering on its address)")
        if pin is None:
            if not yes:
                if not _interactive():
                    raise CliError(f"{url} presents certificate fingerprint {presented}; check it against the one the "
                                   f"agent printed at start, then pass --fingerprint {presented} (or --yes)")
                click.echo(f"{url} presents certificate SHA-256 fingerprint:\n  {presented}\n"
                           "Compare it with the fingerprint the agent printed when it started on the device.", err=True)
                if not click.confirm("Trust this certificate and pin it?", default=False, err=True):
                    raise CliError("not added: the fingerprint was not confirmed")
            pin = presented
    try:
        added = add_device(devices_file, name, url, fingerprint=pin, token_file=token_file)
    except FleetError as exc:
        raise CliError(str(exc)) from None
    pinned = f" pinned to {pin}" if pin else ""
    click.echo(f"{'added' if added else 'updated'} {name} ({url}){pinned} in {devices_file}")
