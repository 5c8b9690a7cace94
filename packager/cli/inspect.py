"""`edgepack inspect`: what is in a bundle, its files checked against the manifest. Base install only."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from device_bench.decoders import DECODERS
from device_bench.manifest import IsaParity, Manifest, verify_files
from device_bench.speed_profile import SpeedProfile, stored_profiles

from .common import EXIT_TARGET_FAILED, stdout_console


def _fmt_mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}"


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_manifest(manifest: Manifest, bundle_dir: Path, problems: list[str] | None = None) -> None:
    from rich.table import Table

    m = manifest.model
    console = stdout_console()
    console.print(f"[bold]{bundle_dir}[/]  (schema {manifest.schema_version}, edgepack {manifest.edgepack_version}, "
                  f"{manifest.created_at})")
    console.print(f"model: {m.source}  {m.architecture} ({m.model_type}), {m.num_parameters / 1e6:.1f}M params, "
                  f"fp32 {m.fp32_size_bytes / 1e6:.1f} MB; task {manifest.task}; seq_len {manifest.input_spec.seq_len}")
    spec = manifest.input_spec
    if spec.pooling:
        console.print(f"embedding: {spec.pooling} pooling"
                      + "".join(f" + Dense {d.get('in_features')}->{d.get('out_features')}" for d in spec.dense)
                      + (" + Normalize" if spec.normalize else "") + f" ({spec.pooling_source or 'default'})"
                      + (f"; prompt {spec.prompt!r}" if spec.prompt else ""), highlight=False)
    if manifest.parity_reference:
        console.print(f"parity reference: {manifest.parity_reference}", highlight=False)
    if manifest.accuracy:
        console.print(f"reference accuracy: {manifest.accuracy.get('reference', 0):.4f} "
                      f"on {manifest.accuracy.get('n_samples')} labelled texts")
    metric = getattr(DECODERS.get(manifest.task), "agreement_metric", "top1_agreement")
    agreement = (metric.replace("top1", "top-1").replace("_agreement", " agree"), metric)
    table = Table()
    for col in ("target", "status", "precision", "runtime", "file", "size MB", "vs fp32", "mean cos", "min cos",
                agreement[0], "max |err|", "accuracy"):
        table.add_column(col, justify="left" if col in ("target", "status", "precision", "runtime", "file") else "right")
    for t in manifest.targets:
        p = t.parity
        ratio = f"{t.size_bytes / m.fp32_size_bytes:.0%}" if t.size_bytes and m.fp32_size_bytes else "-"
        style = {"ok": "green", "parity-failed": "yellow", "failed": "red"}[t.status]
        table.add_row(t.name, f"[{style}]{t.status}[/]", t.precision or "-", t.runtime, t.file or "-",
                      _fmt_mb(t.size_bytes), ratio, _fmt(p and p.mean_cosine), _fmt(p and p.min_cosine),
                      _fmt(p and getattr(p, agreement[1]), 3), _fmt(p and p.max_abs_error), _fmt(p and p.accuracy))
    console.print(table)
    if spec.token_lengths is not None:
        tl = spec.token_lengths
        console.print(f"text lengths (tokens): p50 {tl.p50}, p90 {tl.p90}, max {tl.max} over {tl.n_texts} texts"
                      + (f", {tl.truncated} truncated to {spec.seq_len}" if tl.truncated else "")
                      + f"; buckets {spec.buckets or 'none'} ({spec.bucket_choice})", highlight=False)
    for t in manifest.targets:
        if t.shapes is not None:
            accepts = (f"any length {t.shapes.dynamic['min']}-{t.shapes.dynamic['max']}" if t.shapes.dynamic
                       else f"lengths {','.join(map(str, t.shapes.buckets))}")
            worst = min((p.mean_cosine for p in t.parity_by_length if p.mean_cosine is not None), default=None)
            console.print(f"  {t.name}: {accepts}" + (f"; worst mean cosine per length {worst:.4f}" if worst else ""),
                          highlight=False)
    for t in manifest.targets:
        for isa in t.parity_by_isa:
            console.print(f"  {t.name}: {isa_parity_line(isa)}", highlight=False)
    for t in manifest.targets:
        for note in ([t.error] if t.error else []) + t.notes:
            console.print(f"  {t.name}: {note}", highlight=False)
        compat = t.details.get("compatibility") if t.details else None
        if compat and compat.get("declared"):
            verdict = {True: "compatible", False: "INCOMPATIBLE", None: "unchecked"}[compat.get("compatible")]
            console.print(f"  {t.name}: runtime {compat['declared']}: {verdict}", highlight=False)
            if note := _kernel_coverage_note(compat):
                console.print(f"  {t.name}: {note}", highlight=False)
    if manifest.ignored_fields:
        console.print(f"[yellow]note:[/] written by a newer edgepack (schema {manifest.schema_version}."
                      f"{manifest.schema_minor}); fields this version ignores: {', '.join(manifest.ignored_fields)}",
                      highlight=False)
    for problem in problems or []:
        console.print(f"[red]integrity:[/] {problem}")


def isa_parity_line(isa: IsaParity) -> str:
    """One artifact's gates on another x86 kernel family (``pack --verify-isa``), in one line."""
    where = f"on {isa.isa} kernels (emulated on {isa.emulated_on})"
    if isa.error:
        return f"{where}: not checked: {isa.error}"
    figures = ", ".join(f"{k} {v:.4f}" for k, v in isa.metrics.items() if k in ("mean_cosine", "min_cosine")
                        or k.endswith("agreement"))
    verdict = "ok" if isa.passed else "BELOW GATE"
    return f"{where}: {verdict}" + (f": {figures}" if figures else "") + "".join(f"; {s}" for s in isa.shortfalls)


def speed_lines(profiles: list[tuple[Path, SpeedProfile | None, str | None]]) -> list[str]:
    """The speed profiles stored on this device for the bundle: which artifact `edgepack run` defaults to."""
    if not profiles:
        return ["speed here: no profile yet (edgepack bench, or the first `edgepack run`, measures one)"]
    lines = []
    for path, p, error in profiles:
        if p is None:
            lines.append(f"speed here: unreadable profile {path} ({error})")
            continue
        threads = "default" if p.threads is None else p.threads
        lines.append(f"speed here (threads={threads}, {p.source} at {p.measured_at}): fastest {p.summary()}; "
                     f"device key {p.device_key}")
    return lines


def _kernel_coverage_note(compat: dict[str, Any]) -> str | None:
    try:  # the checker's wording; a device-side install may lack the targets package's dependencies
        from targets.compat import kernel_coverage_note
    except ImportError:
        return None
    return kernel_coverage_note(compat)


@click.command("inspect")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (and integrity check) as JSON.")
def inspect_cmd(bundle: Path, as_json: bool) -> None:
    """Show what is in a bundle and check its files against the manifest."""
    manifest = Manifest.load(bundle)
    problems = verify_files(bundle, manifest)
    profiles = stored_profiles(manifest)
    if as_json:
        click.echo(json.dumps({"bundle": str(bundle), "intact": not problems, "problems": problems,
                               "speed_profiles": [{"path": str(path), "profile": p.to_dict() if p else None,
                                                   "error": error} for path, p, error in profiles],
                               "manifest": manifest.to_dict()}, indent=2))
    else:
        print_manifest(manifest, bundle, problems)
        if not problems:
            click.echo("integrity: all files match their sha256")
        for line in speed_lines(profiles):
            click.echo(line)
    if problems:
        sys.exit(EXIT_TARGET_FAILED)
