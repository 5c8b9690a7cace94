"""`edgepack check`: will this bundle run on that device's runtime, and does it keep its parity there?

``--runtime``: answered from the files, without repacking, by the same checker `pack --runtime` uses
(``targets.compat``): op versions, type-implied versions and probed kernel signatures for ``.tflite``, bytecode
version for ``.ptl``. For a bundle packed before the device was known, or a fleet with mixed runtimes.
``--on-device``: the pack's parity gates recomputed here, with this device's kernels (torch-free).
``--browser``: the bundle's web artifacts (.onnx, MediaPipe .tflite) run in headless Chromium against `edgepack run`
on texts no pack has seen (``device_bench.web``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from device_bench.manifest import Manifest, TargetEntry

from ..declarations import parse_runtime_declarations
from ..errors import EdgepackError

EXIT_INCOMPATIBLE = 1  # as `pack` exits when a target failed

VERDICTS = {True: "compatible", False: "INCOMPATIBLE", None: "undecided"}


def check_bundle(bundle: Path, declarations: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """One row per declaration: the verdict of the bundle's artifact for that target against that runtime."""
    from targets.compat import (
        CompatibilityError,
        check_compatibility,
        kernel_coverage_note,
    )

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
@click.option("--runtime", "runtime_specs", multiple=True, metavar="TARGET=SPEC",
              help="A device runtime for one of the bundle's targets, e.g. tflite-int8=tflite-runtime==2.14 "
                   "(repeatable; the same target may be checked against several runtimes).")
@click.option("--on-device", is_flag=True,
              help="Recompute the pack's parity gates here, with this device's kernels (per target and length).")
@click.option("--browser", is_flag=True,
              help="Run the web artifacts (.onnx, MediaPipe .tflite) in headless Chromium and compare them with "
                   "edgepack run on unseen texts (exit 1 below the gate: embeddings cosine 0.99, classifiers top-1 "
                   "agreement 0.98).")
@click.option("--texts", "texts_file", type=click.Path(path_type=Path),
              help="--browser: the texts, one per line (default: device_bench/web/unseen_texts.txt).")
@click.option("--targets", "target_list", help="--on-device / --browser: comma-separated targets (default: every one).")
@click.option("--isa", "isa", metavar="PROFILE",
              help="--on-device: with the kernels another x86 CPU would get (avx2, avx512_vnni), emulated on this "
                   "one (see `edgepack isa-mask`): that CPU's int8 numerics.")
@click.option("--strict", is_flag=True, help="Treat an undecided verdict (between two known releases), or with "
                                             "--on-device a target below its parity gate here, as a failure (exit 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
def check(bundle: Path, runtime_specs: tuple[str, ...], on_device: bool, browser: bool, texts_file: Path | None,
          target_list: str | None, isa: str | None, strict: bool, as_json: bool) -> None:
    """Check a bundle's artifacts against device runtimes (exit 1 if one is incompatible), their parity on this
    device's kernels (--on-device), or in headless Chromium (--browser)."""
    if not (bundle / "manifest.json").is_file():
        raise EdgepackError(f"{bundle}: not a bundle folder (no manifest.json)")
    if isa is not None and not on_device:
        raise EdgepackError("--isa applies to --on-device")
    if [on_device, browser, bool(runtime_specs)].count(True) != 1:
        raise EdgepackError("give --runtime TARGET=SPEC (runtime compatibility), --on-device (parity here) or "
                            "--browser (parity in Chromium), one of them")
    if target_list is not None and not (on_device or browser):
        raise EdgepackError("--targets applies to --on-device and --browser")
    if texts_file is not None and not browser:
        raise EdgepackError("--texts applies to --browser")
    if browser:
        _check_in_browser(bundle, [t.strip() for t in target_list.split(",") if t.strip()] if target_list else None,
                          texts_file, as_json)
        return
    if on_device:
        _check_on_device(bundle, [t.strip() for t in target_list.split(",") if t.strip()] if target_list else None,
                         strict, as_json, isa)
        return
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


def _check_on_device(bundle: Path, targets: list[str] | None, strict: bool, as_json: bool,
                     isa: str | None = None) -> None:
    import dataclasses

    from device_bench.bench import BenchError, check_parity_here
    from device_bench.parity import gate_summary

    try:
        result = check_parity_here(bundle, targets, isa=isa)
    except BenchError as exc:
        raise EdgepackError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), indent=2))
    else:
        fp = result.fingerprint
        where = (f"{isa} kernels emulated on {fp['cpu_model']}" if isa else
                 f"this device: {fp['cpu_model']}")
        click.echo(f"parity on {where} ({fp['machine']}; ISA {' '.join(fp['isa']) or 'unknown'}); "
                   f"runtimes {', '.join(f'{k} {v}' for k, v in fp['runtimes'].items() if v) or 'none'}")
        for row in result.results:
            parity = row.device_parity
            if parity is None:
                click.echo(f"{row.target}: {row.status}: {row.error}")
                continue
            verdict = "ok" if parity.passed else "BELOW GATE"
            click.echo(f"{row.target}: {verdict}: {gate_summary(parity, result.task)} on {parity.n_samples} "
                       f"calibration texts")
            for length in parity.by_length:
                shown = {**({"mean_cosine": length.mean_cosine} if length.mean_cosine is not None else {}),
                         **length.agreements}
                figures = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
                click.echo(f"  length {length.length}: {'ok' if length.passed else 'below'}: {figures} "
                           f"({length.n_samples} texts)")
            for shortfall in parity.shortfalls:
                click.echo(f"  - {shortfall}")
    if strict and result.below_parity:
        sys.exit(EXIT_INCOMPATIBLE)


def _check_in_browser(bundle: Path, targets: list[str] | None, texts_file: Path | None, as_json: bool) -> None:
    from device_bench.texts import TextsError, read_lines
    from device_bench.web import BrowserError, check_in_browser

    try:
        texts = read_lines(texts_file) if texts_file is not None else None
        checks = check_in_browser(bundle, targets, texts)
    except (BrowserError, TextsError) as exc:
        raise EdgepackError(str(exc)) from None
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        if checks:
            click.echo(f"headless Chromium {checks[0].browser}")
        for c in checks:
            click.echo(c.summary())
    if any(not c.passed for c in checks):
        sys.exit(EXIT_INCOMPATIBLE)
