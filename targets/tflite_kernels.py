"""Kernel type support of TFLite runtimes, probed operator by operator.

Why: an op version says which *registration* a runtime must have, not which
tensor types its kernel accepts. tflite-runtime 2.14 registers ``QUANTIZE``
up to version 3, yet its kernel rejects an int8 -> int16 requantization in
``Prepare`` ("output->type == kTfLiteUInt8 || output->type == kTfLiteInt8 was
not true"), and ``op_version.cc`` gives that signature no version of its own.
Such a model passes an op-version check and fails on the device.

So each operator of a real artifact is cut out into a one-operator model
(same tensor types, shapes, quantization and constant data), and a runtime is
asked to load, allocate and invoke it, one subprocess per model. The outcome is
keyed by the operator's *signature*: the op and its input and output tensor
types, e.g. ``QUANTIZE INT8 -> INT16``. ``targets/data/tflite_kernel_signatures.json``
holds the results per runtime release (derived by
``scripts/derive_tflite_kernel_table.py`` from the artifacts edgepack writes);
``compat`` fails a declaration whose release is known to reject a signature
the artifact uses. Signatures nobody probed are not judged (the report counts them).

Imports nothing heavy at import time.
"""
from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tflite_schema import opcode_names, tensor_type_names

KERNEL_TABLE = Path(__file__).resolve().parent / "data" / "tflite_kernel_signatures.json"
#: ops whose options point at other subgraphs: a one-operator cut cannot keep them
_CONTROL_FLOW = ("WHILE", "IF", "CALL_ONCE", "STABLEHLO_CASE", "STABLEHLO_WHILE", "STABLEHLO_REDUCE",
                 "STABLEHLO_SCATTER", "STABLEHLO_SORT", "STABLEHLO_REDUCE_WINDOW")

#: run inside a runtime's venv: load, allocate and invoke one model file. Inputs are ones, not zeros: an
#: integer DIV checks its divisor for zero at run time, which would fail a kernel that works
PROBE_CHILD = r"""
import json, sys
import numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    from tflite_runtime.interpreter import Interpreter
try:
    it = Interpreter(model_path=sys.argv[1])
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.ones(d["shape"], dtype=d["dtype"]))
    it.invoke()
    print(json.dumps({"ok": True}))
except Exception as exc:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip() and "XNNPACK delegate" not in l]
    print(json.dumps({"ok": False, "error": (" ".join(lines) or type(exc).__name__)[:300]}))
"""


@dataclass
class OperatorCut:
    signature: str
    op: str
    version: int
    model: bytes | None  # None: not cut (control flow)


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def signature(op: str, in_types: list[str | None], out_types: list[str | None]) -> str:
    """``"FULLY_CONNECTED INT16 x INT8 x INT64 -> INT16"``; an absent optional input is ``-``."""
    show = lambda types: " x ".join(t or "-" for t in types)  # noqa: E731
    return f"{op} {show(in_types)} -> {show(out_types)}"


def operator_signatures(buf: bytes) -> list[dict[str, Any]]:
    """Each distinct operator signature of a ``.tflite`` (with its op name and how often it occurs), read
    without unpacking the weights."""
    types = tensor_type_names()
    model = _schema().Model.GetRootAs(buf, 0)
    codes = opcode_names(model)
    seen: dict[str, dict[str, Any]] = {}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        tensor_type = lambda i: types.get(graph.Tensors(int(i)).Type()) if i >= 0 else None  # noqa: E731
        for j in range(graph.OperatorsLength()):
            op = graph.Operators(j)
            name = codes[op.OpcodeIndex()]
            ins = [tensor_type(i) for i in (op.InputsAsNumpy() if op.InputsLength() else [])]
            outs = [tensor_type(i) for i in (op.OutputsAsNumpy() if op.OutputsLength() else [])]
            sig = signature(name, ins, outs)
            seen.setdefault(sig, {"signature": sig, "op": name, "count": 0})["count"] += 1
    return sorted(seen.values(), key=lambda s: s["signature"])


def cut_operators(buf: bytes) -> list[OperatorCut]:
    """One single-operator model per distinct signature of ``buf`` (the first operator that has it)."""
    import flatbuffers

    schema = _schema()
    types = tensor_type_names()
    names = opcode_names(schema.Model.GetRootAs(buf, 0))
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    cuts: dict[str, OperatorCut] = {}
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = names[op.opcodeIndex]
            ins = [] if op.inputs is None else [int(i) for i in op.inputs]
            outs = [] if op.outputs is None else [int(i) for i in op.outputs]
            tensor_type = lambda i: types.get(graph.tensors[i].type) if i >= 0 else None  # noqa: E731
            sig = signature(name, [tensor_type(i) for i in ins], [tensor_type(i) for i in outs])
            if sig in cuts:
                continue
            if name in _CONTROL_FLOW:
                cuts[sig] = OperatorCut(sig, name, int(code.version), None)
                continue
            remap: dict[int, int] = {}
            tensors, buffers, graph_inputs = [], [schema.BufferT()], []
            for index in [i for i in ins + outs + list(op.intermediates if op.intermediates is not None else [])
                          if i >= 0]:
                if index in remap:
                    continue
                t = copy.copy(graph.tensors[index])
                data = _inline(model.buffers[t.buffer], buf) if t.buffer else None
                if data is not None and data.data is not None and len(data.data) > 0:
                    buffers.append(data)
                    t.buffer = len(buffers) - 1
                else:
                    t.buffer = 0
                    if index in ins and not t.isVariable:
                        graph_inputs.append(len(tensors))
                remap[index] = len(tensors)
                tensors.append(t)
            one = copy.copy(op)
            one.opcodeIndex = 0
            one.inputs = [remap[i] if i >= 0 else -1 for i in ins]
            one.outputs = [remap[i] for i in outs]
            if op.intermediates is not None:
                one.intermediates = [remap[int(i)] for i in op.intermediates]
            sub = schema.SubGraphT()
            sub.tensors, sub.operators, sub.name = tensors, [one], "cut"
            sub.inputs, sub.outputs = graph_inputs, [remap[i] for i in outs]
            small = schema.ModelT()
            small.version, small.operatorCodes, small.subgraphs, small.buffers = 3, [code], [sub], buffers
            small.description = f"edgepack kernel probe: {sig}"
            builder = flatbuffers.Builder(1024)
            builder.Finish(small.Pack(builder), file_identifier=b"TFL3")
            cuts[sig] = OperatorCut(sig, name, int(code.version), bytes(builder.Output()))
    return list(cuts.values())


def _inline(buffer, buf: bytes):
    """A buffer whose bytes sit after the flatbuffer (``offset``/``size``, as ai-edge-quantizer writes large
    constants) made self-contained: the cut model is a new file, so offsets into the old one are meaningless."""
    import numpy as np

    if getattr(buffer, "offset", 0) > 1 and buffer.size:
        inline = _schema().BufferT()
        inline.data = np.frombuffer(buf[buffer.offset:buffer.offset + buffer.size], dtype=np.uint8)
        return inline
    return buffer


def probe_cut(python: str, model_path: Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """Run one cut in ``python`` (a runtime's interpreter); a crash or a hang is an outcome too."""
    try:
        proc = subprocess.run([python, "-c", PROBE_CHILD, str(model_path)], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"ok": False, "error": f"probe process exited with {proc.returncode}: {proc.stderr.strip()[-200:]}"}


def load_kernel_table() -> dict[str, Any]:
    return json.loads(KERNEL_TABLE.read_text()) if KERNEL_TABLE.is_file() else {"runtimes": {}}

