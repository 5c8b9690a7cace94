"""`edgepack run`: a bundle on texts, on this device. Base install only (the device side's ``Bundle``)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..errors import EdgepackError


def read_text_lines(path: str) -> list[str]:
    """Non-empty lines of ``path`` (``-``: standard input), one text each."""
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
        raise EdgepackError(f"--file {path}: cannot read ({reason})") from None
    return [line.strip() for line in raw.splitlines() if line.strip()]


@click.command("run")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", "text_file", metavar="PATH", help="Texts, one per line ('-' = standard input); after TEXT...")
@click.option("--target", help="Target to run (default: the fastest verified one on this device, see the README).")
@click.option("--choose", default="fastest", show_default=True, metavar="fastest|order",
              help="Without --target: the fastest verified artifact by measurement (bench profile, else a short "
                   "probe, cached), or the fixed order (parity, torch-free runtimes, pack order).")
@click.option("--threads", type=int, default=None,
              help="Runtime threads: with --target the count used; without, a budget (the chosen artifact runs at "
                   "the count up to it it was fastest with). Default: the runtime's choice.")
@click.option("--top-k", type=int, default=3, show_default=True, help="Classification: how many labels to list.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document with a `results` list (and the `choice`).")
@click.option("-v", "--verbose", is_flag=True, help="Say which target was chosen and on what evidence (stderr).")
def run_cmd(bundle: Path, texts: tuple[str, ...], text_file: str | None, target: str | None, threads: int | None,
            top_k: int, as_json: bool, choose: str = "fastest", verbose: bool = False) -> None:
    """Tokenize TEXT... with the bundle's own tokenizer and run one artifact on them: label, probability and
    top-k for classification; the embedding (dims and norm; the vector with --json) for feature-extraction."""
    from device_bench.native_output import fds_muted
    from device_bench.predict import Bundle, BundleError
    from device_bench.speed_profile import thread_count

    all_texts = [t for t in texts if t.strip()] + (read_text_lines(text_file) if text_file is not None else [])
    if not all_texts:
        raise EdgepackError("no texts: give TEXT arguments or --file (one text per line)")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # the .ptl runner's deprecation chatter
    try:
        with fds_muted(2):  # XNNPACK announces its delegate at the first run, not at load
            loaded = Bundle(bundle, target=target, threads=threads, top_k=top_k, choose=choose)
            predictions = loaded.predict(all_texts)
    except BundleError as exc:
        raise EdgepackError(str(exc)) from None
    entry = loaded.target
    # the choice's warnings were logged while stderr was silenced: said here, once (with its evidence: --verbose)
    for line in loaded.choice.describe() if verbose else [f"edgepack: warning: {n}" for n in loaded.choice.notes]:
        click.echo(line, err=True)
    if as_json:
        click.echo(json.dumps({"bundle": str(bundle), "task": loaded.manifest.task, "target": entry.name,
                               "runtime": entry.runtime, "seq_len": loaded.manifest.input_spec.seq_len,
                               "choice": loaded.choice.to_dict(),
                               "results": [p.to_dict() for p in predictions]}, indent=2))
        return
    on = "" if loaded.run_threads is None else f", {thread_count(loaded.run_threads)}"
    click.echo(f"{entry.name} ({entry.runtime}, {entry.precision or 'precision n/a'}{on}) on {loaded.manifest.task}",
               err=True)
    for prediction in predictions:
        cut = " [truncated]" if prediction.truncated else ""
        click.echo(f"{json.dumps(prediction.text, ensure_ascii=False)}{cut}\n  {prediction.summary()}")
