"""Where an end-to-end ``Bundle.predict`` goes, piece by piece: tokenizing, padding, the runner, decoding, and inside
the TFLite runner the compiled model's own run (issue #23: is the rest worth cutting?).

    python benchmarks/e2e_breakdown.py BUNDLE [--target tflite-int8] [--threads 1] [--n 220] [--rounds 7]

Each piece is timed alone over the same ``--n`` CLINC150 test texts (batch 1, warmed up), median over ``--rounds``
rounds of the mean µs per text; "compiled model run" is LiteRT's ``run_by_index`` on each text's padded inputs,
with nothing around it. Quiet machine only: the load average is recorded with the host's ISA. Writes
``benchmarks/results/e2e_breakdown_<int8 kernel family>.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLINC = ROOT.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json"


def clock(fn: Callable[[int], object], count: int, rounds: int) -> float:
    """Median over rounds of the mean µs of ``fn(i)`` for i in range(count)."""
    import statistics

    means = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(count):
            fn(i)
        means.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(means)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--target", default="tflite-int8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=220, help="CLINC150 test texts")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    for path, what in ((args.bundle / "manifest.json", "no bundle"), (CLINC, "no CLINC150 data")):
        if not path.is_file():
            print(f"e2e_breakdown: {path}: {what}", file=sys.stderr)
            return 2

    from device_bench.fingerprint import cpu_isa, kernel_tag, mask_note
    from device_bench.predict import Bundle, BundleError
    from report import publish

    texts = [t for t, _ in json.loads(CLINC.read_text())["test"]][:args.n]
    try:
        bundle = Bundle(args.bundle, target=args.target, threads=args.threads)
    except BundleError as exc:
        print(f"e2e_breakdown: {exc}", file=sys.stderr)
        return 2
    tokens = [bundle.tokenize([t])[0] for t in texts]
    feeds = [bundle.inputs_for(t) for t in tokens]
    lengths = [next(iter(f.values())).shape[-1] for f in feeds]
    outputs = [bundle.runner.run(f, length=n) for f, n in zip(feeds, lengths)]
    for text in texts:  # warm every signature
        bundle.predict(text)
    pieces = {
        "predict, end to end": lambda i: bundle.predict(texts[i]),
        "tokenize": lambda i: bundle.tokenize([texts[i]]),
        "pad to the bucket (inputs_for)": lambda i: bundle.inputs_for(tokens[i]),
        "runner.run": lambda i: bundle.runner.run(feeds[i], length=lengths[i]),
        "decode (pool, normalize)": lambda i: bundle.decoder.decode(outputs[i], tokens[i], feeds[i]["attention_mask"]),
    }
    compiled = getattr(bundle.runner, "compiled", None)
    if compiled is not None:
        by_length = {e.inputs[0].shape[-1]: e.name for e in bundle.runner.entry_points}
        # (signature index, input buffers, output buffers) per text: the buffers hold the warm-up's inputs
        calls = [(slot[0], slot[2], slot[3]) for slot in (compiled.slots[by_length[n]] for n in lengths)]
        pieces["compiled model run (run_by_index alone)"] = lambda i: compiled.model.run_by_index(*calls[i])
    figures = {name: clock(fn, len(texts), args.rounds) for name, fn in pieces.items()}
    load = os.getloadavg()[0]
    family = kernel_tag(cpu_isa())
    total = figures["predict, end to end"]
    lines = [f"# End to end, piece by piece: {bundle.target.name} ({type(bundle.runner).__name__}), {args.threads} thread(s)",
             "", f"{len(texts)} CLINC150 test texts, batch 1, median of {args.rounds} rounds. Host ISA: "
             f"{' '.join(cpu_isa())} (int8 family `{family}`{mask_note()}); load average {load:.2f} at the end.", "",
             "| piece | µs per text | share of end to end |", "|---|---:|---:|"]
    lines += [f"| {name} | {us:.1f} | {us / total:.1%} |" for name, us in figures.items()]
    publish(args.out, f"e2e_breakdown_{family}.md", lines, "e2e_breakdown.py", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
