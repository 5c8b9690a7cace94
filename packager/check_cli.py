"""`edgepack check`: will this bundle run on that device's runtime? Answered from the files, without repacking.

The same checker `pack --runtime` uses (``targets.compat``): op versions, type-implied versions and probed
kernel signatures for ``.tflite``, bytecode version for ``.ptl``. For a bundle packed before the device
was known, or a fleet with mixed runtimes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from device_bench.manifest import Manifest, TargetEntry

from .declarations import parse_runtime_declarations
from .errors import EdgepackError

EXIT_INCOMPATIBLE = 1  # as `pack` exits when a target failed

VERDICTS = {True: "compatible", False: "INCOMPATIBLE", None: "undecided"}


def check_bundle(bundle: Path, declarations: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per declaration: the verdict of the bundle's artifact for that target against that runtime."""
    from targets.compat import CompatibilityError, check_compatibility, kernel_coverage_note

    manifest = Manifest.load(bundle)
    entries: dict[str, TargetEntry] = {t.name: t for t in manifest.targets if t.file}
    rows = []
    for target, spec in declarations:
        entry = entries.get(target)
        if entry is None:
            have = ", ".join(sorted(entries)) or "none"
            raise EdgepackError(f"--runtime {target}={spec}: {bundle} has no {target} artifact (it has: {have})")
        try:
            report = check_compatibility(entry.runtime, bundle / entry.file, spec)
        except CompatibilityError as exc:
            raise EdgepackError(f"{exc} (declared for target {target})") from None
        rows.append({"target": target, "file": entry.file, "declared": spec, "verdict": VERDICTS[report["compatible"]],
                     "compatible": report["compatible"], "checked_against": report["checked_against"],
                     "problems": report["problems"], "remedy": report["remedy"],
                     "note": kernel_coverage_note(report), "report": report})
    return rows


@click.command("check")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--runtime", "runtime_specs", multiple=True, required=True, metavar="TARGET=SPEC",
              help="A device runtime for one of the bundle's targets, e.g. tflite-int8=tflite-runtime==2.14 "
                   "(repeatable; the same target may be checked against several runtimes).")
@click.option("--strict", is_flag=True, help="Treat an undecided verdict (between two known releases) as a failure.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
def check(bundle: Path, runtime_specs: tuple[str, ...], strict: bool, as_json: bool) -> None:
    """Check a bundle's artifacts against device runtimes; exit 1 if one is incompatible."""
    if not (bundle / "manifest.json").is_file():
        raise EdgepackError(f"{bundle}: not a bundle folder (no manifest.json)")
    rows = check_bundle(bundle, parse_runtime_declarations(runtime_specs))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            against = f" (checked against {row['checked_against']})" if row["checked_against"] else ""
            click.echo(f"{row['target']} on {row['declared']}: {row['verdict']}{against}")
            for problem in row["problems"]:
                click.echo(f"  - {problem}")
            if row["remedy"]:
                click.echo(f"  remedy: {row['remedy']}")
            if row["note"]:
                click.echo(f"  note: {row['note']}")
    failed = [r for r in rows if r["compatible"] is False or (strict and r["compatible"] is None)]
    if failed:
        sys.exit(EXIT_INCOMPATIBLE)
