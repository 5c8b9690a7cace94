"""``edgepack isa-mask PROFILE -- COMMAND…``: run a command with the kernels an older x86 CPU would get."""
from __future__ import annotations

import os

import click

from .launch import IsaMaskError, host_verdicts, masked_environ, profile_named
from .profiles import PROFILES


class IsaMaskUsageError(click.ClickException):
    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(f"edgepack: error: {self.format_message()}", err=True)


@click.command("isa-mask", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("profile", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--list", "list_profiles", is_flag=True, help="List the profiles and whether this host can apply each.")
def isa_mask_cmd(profile: str | None, command: tuple[str, ...], list_profiles: bool) -> None:
    """Run COMMAND with CPUID answering as PROFILE's CPU would, so ONNX Runtime, XNNPACK and PyTorch pick that
    CPU's kernels (int8 numerics are that CPU's; timings are this core's running them, a proxy).

    \b
    edgepack isa-mask avx2 -- edgepack check --on-device out/minilm
    edgepack isa-mask avx512_vnni -- python benchmarks/fused_int8.py
    """
    if list_profiles:
        for name, why_not in host_verdicts().items():
            click.echo(f"{name}: {PROFILES[name].like} — {f'not here: {why_not}' if why_not else 'available here'}")
        return
    if command[:1] == ("--",):
        command = command[1:]
    if not profile:
        raise IsaMaskUsageError(f"name a profile ({', '.join(PROFILES)}) and a command after '--'")
    if not command:
        raise IsaMaskUsageError(f"isa-mask {profile}: no command to run (put it after '--')")
    try:
        env = masked_environ(profile_named(profile))
    except (IsaMaskError, OSError) as exc:
        raise IsaMaskUsageError(str(exc)) from None
    try:
        os.execvpe(command[0], list(command), env)
    except OSError as exc:
        raise IsaMaskUsageError(f"{command[0]}: {exc.strerror}") from None
