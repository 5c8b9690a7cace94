"""Derive the ``tflite-micro`` rows of ``targets/data/tflite_op_versions.json`` from the runtime itself.

Usage (from the repository root, with the packing venv)::

    python -m venv /tmp/tflm
    /tmp/tflm/bin/pip install tflite-micro==0.dev20261023182759 numpy
    .venv/bin/python scripts/derive_tflite_micro_table.py --tflm-python /tmp/tflm/bin/python --write

Why this way: TFLM resolves operators in ``MicroInterpreter::AllocateTensors`` ->
``PrepareNodeAndRegistrationDataFromFlatbuffer``, which, operator by operator,
calls ``GetRegistrationFromOpCode`` (``micro_op_resolver.cc``:
``op_resolver.FindOp(builtin_code)``, no version argument; prints "Didn't find
op for builtin opcode" when absent) and then the op's builtin-data parser. Only
after *every* operator is resolved do the kernels' Init/Prepare run; a bad probe
model crashing a kernel there is what made the plain one-op probes segfault.

Each probe model therefore has two operators: the probed op, then a sentinel
operator whose builtin code (9999) is above ``BuiltinOperator_MAX``. Resolution
of the probed op (and its parser) runs first; the sentinel then stops allocation
with "Op builtin_code out of range: 9999" before any kernel code runs. So per probe:

* "Didn't find op for builtin opcode" -> the Python interpreter's resolver lacks the op;
* "Op builtin_code out of range" -> the op resolved and parsed;
* anything else (a crash, another error) -> reported as an anomaly, never guessed.

Every probe runs in its own subprocess (a crash cannot take others with it).
Each op is probed at version 1 and at version 99: identical outcomes for every
op are the evidence that TFLM ignores ``OperatorCode.version``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from targets.compat import TFLITE_TABLE, probe_models  # noqa: E402

#: run inside the TFLM venv: construct the interpreter on one model file
CHILD = """
import sys
from tflite_micro.python.tflite_micro import runtime
try:
    runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read(), arena_size=1 << 20)
    print("CONSTRUCTED", flush=True)
except Exception as exc:
    print("ERROR", type(exc).__name__, exc, flush=True)
"""
ABSENT = "Didn't find op for builtin opcode"
RESOLVED = "Op builtin_code out of range"
SENTINEL_CODE = 9999  # above BuiltinOperator_MAX of any schema
VERSIONS = (1, 99)


def sentinel_model(content: bytes, version: int) -> bytes:
    """The one-op probe model at ``version``, plus a second operator whose builtin code no schema has."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    model.operatorCodes[0].version = version
    graph = model.subgraphs[0]
    if model.operatorCodes[0].builtinCode == schema.BuiltinOperator.VAR_HANDLE:
        # the Python wrapper reads VAR_HANDLE's shared_name before constructing the interpreter
        graph.operators[0].builtinOptionsType = schema.BuiltinOptions.VarHandleOptions
        graph.operators[0].builtinOptions = schema.VarHandleOptionsT()
        graph.operators[0].builtinOptions.sharedName = "probe"
    unknown = schema.OperatorCodeT()
    unknown.builtinCode, unknown.deprecatedBuiltinCode, unknown.version = SENTINEL_CODE, 127, 1
    model.operatorCodes.append(unknown)
    sentinel = schema.OperatorT()
    sentinel.opcodeIndex, sentinel.inputs, sentinel.outputs = 1, [1], [1]
    graph.operators.append(sentinel)
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def probe(python: str, path: Path) -> str:
    """'absent' | 'resolved' | 'anomaly: ...' for one model, in a fresh process."""
    try:
        run = subprocess.run([python, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "anomaly: timeout"
    text = run.stdout + run.stderr
    if ABSENT in text:
        return "absent"
    if RESOLVED in text:
        return "resolved"
    return f"anomaly: rc={run.returncode} {text.strip()[-200:]!r}"


def library_ops(header: Path) -> list[str]:
    """Builtin ops TFLM's ``MicroMutableOpResolver`` can register (a firmware's choice): a cross-check."""
    import re

    return sorted(set(re.findall(r"AddBuiltin\(\s*BuiltinOperator_([A-Z0-9_]+)", header.read_text())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflm-python", required=True, help="python of a venv with tflite-micro installed")
    parser.add_argument("--mutable-resolver-header", type=Path,
                        help="micro_mutable_op_resolver.h of TFLM source, to cross-check the probe (optional)")
    parser.add_argument("--source-commit", default=None, help="commit the header was read at (recorded)")
    parser.add_argument("--write", action="store_true", help="update the shipped table")
    args = parser.parse_args()

    release = subprocess.run([args.tflm_python, "-c", "from importlib.metadata import version; "
                              "print(version('tflite-micro'))"], capture_output=True, text=True,
                             check=True).stdout.strip()
    outcomes: dict[str, dict[int, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for (name, _), content in sorted(probe_models(max_version=1).items()):
            for version in VERSIONS:
                path = Path(tmp) / f"{name}_v{version}.tflite"
                path.write_bytes(sentinel_model(content, version))
                outcomes.setdefault(name, {})[version] = probe(args.tflm_python, path)
            print(name, outcomes[name], flush=True)
    anomalies = {n: o for n, o in outcomes.items() if any(v.startswith("anomaly") for v in o.values())}
    version_dependent = sorted(n for n, o in outcomes.items() if len(set(o.values())) > 1)
    ops = sorted(n for n, o in outcomes.items() if o[1] == "resolved")
    print(f"tflite-micro {release}: {len(ops)} ops resolve; anomalies: {anomalies or 'none'}; "
          f"outcome differs between versions {VERSIONS}: {version_dependent or 'none'}")
    if anomalies or version_dependent:
        sys.exit("not writing: the probe results need a look (see above)")
    if not args.write:
        return
    table = json.loads(TFLITE_TABLE.read_text())
    table["runtimes"]["tflite-micro"] = {release: {op: None for op in ops}}
    micro = {
        "versions_checked": False,
        "derivation": (
            "scripts/derive_tflite_micro_table.py: each builtin op probed in its own subprocess with the "
            "tflite-micro Python interpreter (PythonOpsResolver) on a one-op model plus a sentinel operator "
            "with builtin code 9999, so resolution finishes before any kernel runs; present = 'Op builtin_code "
            "out of range: 9999' (the sentinel), absent = \"Didn't find op for builtin opcode\". "
            f"Every op gave the same outcome at versions {list(VERSIONS)}: TFLM's resolver looks ops up "
            "by builtin code only "
            "(micro_op_resolver.cc GetRegistrationFromOpCode -> FindOp(builtin_code)), so rows map op -> null "
            "(any version)."),
    }
    if args.mutable_resolver_header:
        lib = library_ops(args.mutable_resolver_header)
        diff = {"only_in_source": sorted(set(lib) - set(ops)), "only_in_runtime": sorted(set(ops) - set(lib))}
        micro["source_check"] = (
            f"tensorflow/tflite-micro {args.source_commit or '?'} tensorflow/lite/micro/micro_mutable_op_resolver.h "
            f"can register {len(lib)} builtin ops (AddBuiltin calls); differences from the probed runtime: "
            f"{diff if any(diff.values()) else 'none'}")
    table["tflite-micro"] = micro
    TFLITE_TABLE.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    print(f"wrote {TFLITE_TABLE}")


if __name__ == "__main__":
    main()
