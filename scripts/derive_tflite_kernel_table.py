"""Derive ``targets/data/tflite_kernel_signatures.json``: which operator signatures each runtime's kernels run.

Usage (from the repository root, with the packing venv)::

    python -m venv /tmp/tfrt && /tmp/tfrt/bin/pip install tflite-runtime==2.14.0 'numpy<2'
    python -m venv /tmp/litert-2.2.0 && /tmp/litert-2.2.0/bin/pip install ai-edge-litert==2.2.0
    .venv/bin/python scripts/derive_tflite_kernel_table.py \\
        --runtime tflite-runtime==2.14.0=/tmp/tfrt/bin/python \\
        --runtime ai-edge-litert==2.2.0=/tmp/litert-2.2.0/bin/python \\
        --runtime ai-edge-litert==2.3.0=.venv/bin/python \\
        --write out/minilm/*.tflite out/clinc/*.tflite ...

Every distinct operator signature of the given artifacts (op + input/output
tensor types) is cut into a one-operator model (``targets.tflite_kernels``)
and loaded, allocated and invoked (inputs all ones) by each runtime, one
subprocess per cut. Results are merged into the table: a signature probed
before keeps its row unless probed again. A signature whose op *version* a
release lacks fails here too ("Didn't find op ..."): the op-version table
already says so, the row just records it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from targets.tflite_kernels import KERNEL_TABLE, cut_operators, load_kernel_table, probe_cut  # noqa: E402


def parse_runtime(text: str) -> tuple[str, str, str]:
    """``"tflite-runtime==2.14.0=/tmp/tfrt/bin/python"`` -> (family, release, python)."""
    spec, _, python = text.rpartition("=")
    family, sep, release = spec.partition("==")
    if not (sep and python and release):
        raise argparse.ArgumentTypeError(f"{text!r}: expected FAMILY==RELEASE=PYTHON")
    return family, release, python


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", type=Path, help=".tflite files whose operators are probed")
    ap.add_argument("--runtime", action="append", type=parse_runtime, required=True,
                    help="FAMILY==RELEASE=PYTHON: a runtime and the interpreter that has it installed")
    ap.add_argument("--write", action="store_true", help=f"merge the results into {KERNEL_TABLE}")
    args = ap.parse_args()

    cuts, sources = {}, []
    for path in args.artifacts:
        buf = path.read_bytes()
        sources.append(f"{path.name} sha256:{hashlib.sha256(buf).hexdigest()[:16]}")
        for cut in cut_operators(buf):
            cuts.setdefault(cut.signature, cut)
    print(f"{len(cuts)} distinct operator signatures in {len(args.artifacts)} artifact(s)")

    table = load_kernel_table()
    table.setdefault("schema_version", 1)
    table["derivation"] = ("scripts/derive_tflite_kernel_table.py: each operator signature of real edgepack "
                           "artifacts cut into a one-operator model (targets/tflite_kernels.py), loaded, allocated "
                           "and invoked (inputs all ones) by the runtime, one subprocess per cut")
    runtimes = table.setdefault("runtimes", {})
    with tempfile.TemporaryDirectory() as tmp:
        for family, release, python in args.runtime:
            results = {}
            for i, (sig, cut) in enumerate(sorted(cuts.items())):
                if cut.model is None:
                    continue
                model = Path(tmp) / f"{i}.tflite"
                model.write_bytes(cut.model)
                results[sig] = probe_cut(python, model)
            if not any(r["ok"] for r in results.values()):  # a broken venv, not 68 kernel verdicts
                print(f"{family} {release}: no probe ran at all ({next(iter(results.values()))['error'][:200]}); "
                      "fix that interpreter, nothing recorded for it", file=sys.stderr)
                return 1
            row = runtimes.setdefault(family, {}).setdefault(release, {"ok": [], "fail": {}})
            ok, fail = set(row["ok"]), dict(row["fail"])
            for sig, result in results.items():
                ok.discard(sig)
                fail.pop(sig, None)
                if result["ok"]:
                    ok.add(sig)
                else:
                    fail[sig] = result["error"]
                    print(f"  {family} {release}: {sig}: {result['error'][:150]}")
            row["ok"], row["fail"] = sorted(ok), dict(sorted(fail.items()))
            row["probed_on"] = str(date.today())
            print(f"{family} {release}: {len(ok)} ok, {len(fail)} failing")
    table["artifacts"] = sorted(set(table.get("artifacts", [])) | set(sources))
    if args.write:
        ordered = {k: table[k] for k in ("schema_version", "derivation", "artifacts", "runtimes")}
        KERNEL_TABLE.write_text(json.dumps(ordered, indent=1) + "\n")
        print(f"wrote {KERNEL_TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
