"""`edgepack-agent`: the on-device agent (``serve``) and what this device can measure (``info``).

    edgepack-agent token rotate --token-file ~/.edgepack-token
    edgepack-agent serve --host 0.0.0.0 --port 8765 --token-file ~/.edgepack-token
    edgepack-agent info [--json]

The agent serves HTTPS with its own self-signed certificate (made on first
start, kept beside the work directory) and prints the certificate's SHA-256
fingerprint for the host to pin; plain HTTP only with ``--insecure-http``.
Without a token the agent refuses to listen on anything but loopback. Bad
options are one line on stderr and exit status 2.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import click

from .bench import default_memory_limit_mb, kill_active_workers
from .client import AgentError, read_token
from .energy import BACKENDS, EnergyConfig, EnergyError, detect
from .extra_runners import ExtraRunnerError, register_extra_runners
from .fingerprint import cpu_model, device_model, device_runtimes, fingerprint
from .thermal import ThermalConfig, read_zones
from .tls import tls_dir_for

EXIT_USAGE = 2
DEFAULT_WORKDIR = Path("~/.cache/edgepack-agent")
log = logging.getLogger("edgepack.agent")


class AgentCliError(click.ClickException):
    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"edgepack-agent: error: {self.format_message()}", err=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _energy_options(f):
    for decorator in reversed([
        click.option("--sys-root", type=click.Path(path_type=Path), default=Path("/sys"), show_default=True,
                     help="Where sysfs is (power, thermal and cpufreq are read below it); tests point it at fake trees."),
        click.option("--power-cmd", help="External meter: a command (no shell) that prints the current power in watts."),
        click.option("--power-profile", help="Power profile name or JSON file for the CPU-time estimate."),
        click.option("--energy-backend", type=click.Choice(BACKENDS), help="Force an energy backend instead of auto-detection."),
        click.option("--vcgencmd", default="vcgencmd", show_default=True, help="vcgencmd command (Raspberry Pi 5 PMIC)."),
        click.option("--sample-interval", type=float, default=0.05, show_default=True, help="Power sampling interval (s)."),
        click.option("--idle-seconds", type=float, default=1.0, show_default=True, help="Idle power baseline duration (s)."),
    ]):
        f = decorator(f)
    return f


def _energy_config(sys_root: Path, power_cmd: str | None, power_profile: str | None, energy_backend: str | None,
                   vcgencmd: str, sample_interval: float, idle_seconds: float) -> EnergyConfig:
    if sample_interval <= 0 or idle_seconds < 0:
        raise AgentCliError("--sample-interval must be positive and --idle-seconds not negative")
    return EnergyConfig.under(sys_root, power_cmd=power_cmd, power_profile=power_profile, backend=energy_backend,
                              vcgencmd=vcgencmd or None, sample_interval_s=sample_interval, idle_seconds=idle_seconds,
                              device_model=device_model(), cpu_model=cpu_model())


@click.group()
def main() -> None:
    """edgepack on-device benchmark agent."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (non-loopback needs a token).")
@click.option("--port", type=int, default=8765, show_default=True, help="Port (0 = any free port).")
@click.option("--token-file", type=click.Path(path_type=Path), help="File holding the bearer token clients must send.")
@click.option("--token", help="The bearer token itself (visible in `ps`; prefer --token-file).")
@click.option("--workdir", type=click.Path(path_type=Path), default=DEFAULT_WORKDIR, show_default=True, help="Where jobs are kept.")
@click.option("--tls-dir", type=click.Path(path_type=Path),
              help="Where the certificate and its key are kept (default: beside the work dir, WORKDIR.tls).")
@click.option("--insecure-http", is_flag=True,
              help="Serve plain HTTP: the token and the bundles cross the network in the clear (tests, local use).")
@click.option("--auth-free-failures", type=int, default=10, show_default=True,
              help="Wrong tokens one address may send (per 10 min) before it is locked out, for 1, 2, 4… s up to 15 min.")
@click.option("--max-upload-mb", type=int, default=512, show_default=True, help="Largest bundle archive accepted.")
@click.option("--keep-jobs", type=int, default=20, show_default=True, help="Finished jobs kept on disk.")
@click.option("--max-jobs-queued", type=int, default=16, show_default=True, help="Jobs queued or running at once; more get 503.")
@click.option("--max-inflight-uploads", type=int, default=2, show_default=True, help="Uploads received and unpacked at once; others wait, then get 503.")
@click.option("--name", help="Device label in reports (default: hostname).")
@click.option("--timeout", "timeout_s", type=float, default=600.0, show_default=True, help="Per-worker time limit (s).")
@click.option("--memory-limit-mb", type=int, help="Per-worker address-space limit; 0 = none (default: RAM).")
@click.option("--thermal-threshold", type=float, default=70.0, show_default=True, help="Wait before each target until zones are below this (°C).")
@click.option("--thermal-max-wait", type=float, default=60.0, show_default=True, help="Longest wait for cooling (s).")
@_energy_options
@click.option("-v", "--verbose", is_flag=True, help="Log every request.")
def serve(host: str, port: int, token_file: Path | None, token: str | None, workdir: Path, tls_dir: Path | None,
          insecure_http: bool, auth_free_failures: int, max_upload_mb: int,
          keep_jobs: int, max_jobs_queued: int, max_inflight_uploads: int, name: str | None, timeout_s: float, memory_limit_mb: int | None, thermal_threshold: float,
          thermal_max_wait: float, sys_root: Path, power_cmd: str | None, power_profile: str | None,
          energy_backend: str | None, vcgencmd: str, sample_interval: float, idle_seconds: float, verbose: bool) -> None:
    """Serve the benchmark API until interrupted."""
    from .server import AgentConfig, AgentServer

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        secret = read_token(token, token_file)
    except AgentError as exc:
        raise AgentCliError(str(exc)) from None
    if not secret and not is_loopback(host):
        raise AgentCliError(f"refusing to listen on {host} without a token: give --token-file (without one the agent binds to loopback only)")
    if token_file and secret and Path(token_file).expanduser().stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(f"warning: {token_file} is readable by other users (chmod 600 it)", err=True)
    if min(max_upload_mb, keep_jobs, max_jobs_queued, max_inflight_uploads) < 1 or not 0 < timeout_s <= 86_400:
        raise AgentCliError("--max-upload-mb, --keep-jobs, --max-jobs-queued, --max-inflight-uploads and --timeout must be positive")
    if auth_free_failures < 1:
        raise AgentCliError("--auth-free-failures must be positive")
    certificate = None
    if insecure_http:
        if tls_dir is not None:
            raise AgentCliError("--tls-dir and --insecure-http contradict each other")
        log.warning("--insecure-http: serving plain HTTP; the token and every bundle cross the network in the clear")
    else:
        certificate = _certificate(tls_dir.expanduser() if tls_dir else tls_dir_for(workdir.expanduser()))
    try:
        register_extra_runners()
        config = AgentConfig(
            workdir=workdir.expanduser(), token=None if token_file else secret,
            token_file=Path(token_file).expanduser() if token_file else None,
            tls=certificate.server_context() if certificate else None, auth_free_failures=auth_free_failures,
            name=name or socket.gethostname(), max_upload_mb=max_upload_mb,
            keep_jobs=keep_jobs, timeout_s=timeout_s, max_jobs_queued=max_jobs_queued,
            max_inflight_uploads=max_inflight_uploads,
            memory_limit_mb=default_memory_limit_mb() if memory_limit_mb is None else (memory_limit_mb or None),
            energy=_energy_config(sys_root, power_cmd, power_profile, energy_backend, vcgencmd, sample_interval, idle_seconds),
            thermal=ThermalConfig(root=sys_root / "class" / "thermal", threshold_c=thermal_threshold, max_wait_s=thermal_max_wait),
            sys_root=sys_root,
        )
        server = AgentServer((host, port), config)
    except (EnergyError, ExtraRunnerError) as exc:
        raise AgentCliError(str(exc)) from None
    except ssl.SSLError as exc:
        raise AgentCliError(f"the certificate in {certificate.cert.parent if certificate else '?'} is unusable "
                            f"({exc.reason or exc}); move it away to make a new one") from None
    except OSError as exc:
        raise AgentCliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    def shutdown(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    scheme = "http" if insecure_http else "https"
    if certificate is not None:
        made = "made now" if certificate.created else "kept"
        click.echo(f"certificate SHA-256 fingerprint: {certificate.fingerprint} ({made} in {certificate.cert.parent}; "
                   f"pin it on the host: edgepack devices add NAME {scheme}://HOST:{bound_port} --fingerprint "
                   f"{certificate.fingerprint})")
    click.echo(f"edgepack-agent listening on {scheme}://{shown}:{bound_port} (pid {os.getpid()}, "
               f"energy: {server.energy_detection.description} [{server.energy_detection.kind}])")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        kill_active_workers()
        server.store.stop(timeout_s=1.0)


def _certificate(tls_dir: Path):
    from .tls import ensure_certificate

    try:
        certificate = ensure_certificate(tls_dir)
    except ImportError as exc:
        raise AgentCliError(f"TLS needs the 'cryptography' package ({exc}); install it, or pass --insecure-http") from None
    except (OSError, ValueError) as exc:
        raise AgentCliError(f"certificate in {tls_dir}: {getattr(exc, 'strerror', None) or exc}") from None
    if certificate.key_mode_fixed:
        click.echo(f"warning: {certificate.key} was readable by other users; made it 0600 (consider making a new "
                   "certificate: move the folder away and restart)", err=True)
    return certificate


@main.group()
def token() -> None:
    """The agent's bearer token."""


@token.command("rotate")
@click.option("--token-file", type=click.Path(path_type=Path), required=True,
              help="The agent's --token-file; replaced atomically (0600). A running agent uses the new token at once.")
@click.option("--quiet", is_flag=True, help="Do not print the new token.")
def rotate(token_file: Path, quiet: bool) -> None:
    """Write a new random token; the running agent picks it up without a restart and the old one stops working."""
    from .auth import rotate_token

    try:
        new = rotate_token(token_file)
    except OSError as exc:
        raise AgentCliError(f"token file {token_file}: {exc.strerror or exc}") from None
    click.echo(f"new token written to {token_file} (copy it to the host's token_file)", err=True)
    if not quiet:
        click.echo(new)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_energy_options
def info(as_json: bool, sys_root: Path, power_cmd: str | None, power_profile: str | None, energy_backend: str | None,
         vcgencmd: str, sample_interval: float, idle_seconds: float) -> None:
    """What this device is, which runtimes it has, and how it can measure energy and temperature."""
    try:
        register_extra_runners()
        detection = detect(_energy_config(sys_root, power_cmd, power_profile, energy_backend, vcgencmd, sample_interval, idle_seconds))
    except (EnergyError, ExtraRunnerError) as exc:
        raise AgentCliError(str(exc)) from None
    data = {"fingerprint": fingerprint(sys_root=sys_root), "runtimes": device_runtimes(),
            "energy": detection.to_dict(), "thermal_zones": read_zones(sys_root / "class" / "thermal")}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    fp = data["fingerprint"]
    lines = [
        f"device     {fp['device_model'] or fp['hostname']}",
        f"cpu        {fp['cpu_model']} ({fp['cores_physical']} physical / {fp['cores_logical']} logical cores, governor {fp['governor'] or 'n/a'})",
        f"memory     {fp['memory_total_mb']} MB",
        f"os         {fp['os']} / Python {fp['python']}",
        "runtimes   " + ", ".join(f"{k}: {v or 'not installed'}" for k, v in data["runtimes"].items()),
        f"energy     {detection.description} ({detection.kind})",
    ]
    lines += [f"           - {t['reason']}" for t in detection.tried]
    zones = data["thermal_zones"]
    lines.append("thermal    " + (", ".join(f"{k} {v:.1f}°C" for k, v in zones.items()) if zones else "no thermal zones"))
    click.echo("\n".join(lines))


cli = main  # the same group, mounted by the host CLI as `edgepack agent`

if __name__ == "__main__":
    main()
