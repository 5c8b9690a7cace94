"""Will the device's runtime load this artifact? Checked at pack time, not on the device.

``check_compatibility(runtime_key, artifact, declared)`` lists what the artifact
needs (TFLite: builtin operator codes and versions; ``.ptl``: bytecode version
and root operators) and checks it against the runtime the user declared for the
device (a pip-style requirement such as ``ai-edge-litert>=2.3``,
``tflite-runtime==2.14``, ``tflite-micro`` or ``torch>=2.13``).

How the tables in ``targets/data`` were derived
-----------------------------------------------
``tflite_op_versions.json``: by asking each runtime's own op resolver.
``probe_models()`` builds, for every ``BuiltinOperator`` and version 1..15, a
one-op flatbuffer; ``probe_interpreter()`` constructs the runtime's
``Interpreter`` on each. Construction resolves every operator code against the
registry (``BuiltinOpResolver`` in LiteRT/tflite-runtime) and fails with "Didn't find op for builtin opcode ..." when
the (op, version) pair is not registered; the highest version that resolves is
the table entry. The probe ran inside a throwaway virtual environment per
runtime release (tflite-runtime 2.14.0 needs numpy<2, so it never enters the
packing venv); ``tests/test_compat.py`` re-runs it against the installed
ai-edge-litert and requires the shipped table to match.

``torch_lite_bytecode.json``: the Lite Interpreter reads bytecode versions
``kMinSupportedBytecodeVersion..kMaxSupportedBytecodeVersion``
(``caffe2/serialize/versions.h``). Each row names its evidence; the row for the
installed torch is re-checked by the tests (backporting a real ``.ptl`` to
every version in range and loading it).

``tflite-micro`` rows of ``tflite_op_versions.json``: by
``scripts/derive_tflite_micro_table.py``, which asks the tflite-micro Python
interpreter (its ``PythonOpsResolver``) about each builtin op, one subprocess
per probe. TFLM resolves every operator (``GetRegistrationFromOpCode`` ->
``FindOp(builtin_code)``) before any kernel's Init/Prepare runs (a bad probe
model crashing a kernel is why plain one-op probes segfaulted), so each probe
model adds a sentinel operator with an unknown builtin code: "Op builtin_code
out of range" then means the probed op resolved, "Didn't find op for builtin
opcode" that it is absent. Every op resolved identically at versions 1 and 99:
TFLM ignores ``OperatorCode.version``, so its rows say op -> null (any version)
and only the op's presence is checked. Tensor-type support inside a TFLM kernel
is not checked.

``tflite_type_versions.json``: the version an operator's tensor types imply,
transcribed rule by rule from ``GetBuiltinOperatorVersion``
(``tflite/tools/versioning/op_version.cc`` in LiteRT; each rule cites its
condition). A converter writes that version; ai-edge-quantizer keeps the float
model's versions on quantized ops (a full-integer ADD stays version 1), so the
version an operator needs is max(file version, type-implied version), as
``UpdateOpVersion`` in the same file computes. Reports list both
(``version``, ``required_version``); verdicts use the latter.

``tflite_kernel_signatures.json``: op versions name registrations, not the
tensor types a kernel accepts (tflite-runtime 2.14 has ``QUANTIZE`` v3 but its
kernel rejects int8 -> int16). ``scripts/derive_tflite_kernel_table.py`` cuts
every operator signature of real edgepack artifacts into a one-operator model
and runs it on each release (``tflite_kernels``); a declaration whose release
rejected a signature the artifact uses fails, with the probe's error. Signatures
never probed are listed in ``kernels.not_probed`` and not judged.

Semantics of a declaration
--------------------------
A declaration admits a range of runtime releases; the artifact is compatible
when the *oldest* admitted release loads it. Support only grows with releases,
so for a floor between two known releases A < floor < B: what A loads is fine,
what B cannot load is a definite failure, anything else is "unknown"
(``compatible=None``), never a guess. A declaration without a version (plain
``tflite-micro``) admits every release, so ops present in the oldest known one
are still "unknown" there; ops absent from it are failures.

This module imports nothing heavy at import time (it is also loaded standalone,
by file path, inside the probe venvs).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from .tflite_schema import builtin_names, opcode_names, tensor_type_names

REPORT_SCHEMA_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"
TFLITE_TABLE = DATA_DIR / "tflite_op_versions.json"
TORCH_LITE_TABLE = DATA_DIR / "torch_lite_bytecode.json"
TFLITE_TYPE_RULES = DATA_DIR / "tflite_type_versions.json"
#: families whose tables map op -> null: the runtime resolves by builtin code, ignoring versions
VERSIONLESS = ("tflite-micro",)
#: builtin codes that are not operators a resolver can be asked about
_NOT_PROBED = ("CUSTOM", "PLACEHOLDER_FOR_GREATER_OP_CODES", "DELEGATE")
PROBE_MAX_VERSION = 15
#: how a runtime reports an op version it has no registration for (the op table covers those)
_UNREGISTERED = "Didn't find op for builtin opcode"
#: load errors meaning "this runtime has no such (op, version)"; other errors come after resolution
_UNSUPPORTED_MARKERS = ("didn't find op", "out of range", "not supported", "unsupported")
#: declared-runtime names understood per runtime key (aliases -> table family)
FAMILIES: dict[str, dict[str, str]] = {
    "tflite": {"ai-edge-litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime",
               "tflite-micro": "tflite-micro", "tflm": "tflite-micro"},
    "torch-lite": {"torch": "torch", "pytorch": "torch", "pytorch-lite": "torch", "torch-lite": "torch"},
}


class CompatibilityError(ValueError):
    """The declared runtime cannot be understood; the message is shown as-is."""


@dataclass
class CompatReport:
    """The verdict written to the manifest under ``details["compatibility"]``."""

    declared: str | None
    compatible: bool | None  # None: nothing declared, or not decidable from the known tables
    problems: list[str] = field(default_factory=list)
    ops: list[dict[str, Any]] = field(default_factory=list)
    remedy: str | None = None
    checked_against: str | None = None  # the table release the verdict used, e.g. "tflite-runtime==2.14.0"
    artifact: dict[str, Any] = field(default_factory=dict)  # format facts (bytecode version, min_runtime_version)
    #: TFLite: operator signatures (op + tensor types) checked against the probed kernel table (tflite_kernels)
    kernels: dict[str, Any] = field(default_factory=dict)
    schema_version: int = REPORT_SCHEMA_VERSION


# ---------------------------------------------------------------- public API
def check_compatibility(runtime_key: str, artifact: Path, declared: str | None) -> dict[str, Any]:
    """List what ``artifact`` needs and, when ``declared`` is given, whether that runtime loads it."""
    artifact = Path(artifact)
    if runtime_key == "tflite":
        report = _check_tflite(artifact, declared)
    elif runtime_key == "torch-lite":
        report = _check_torch_lite(artifact, declared)
    else:
        report = CompatReport(declared=declared, compatible=None)
        if declared:
            report.problems.append(f"no compatibility table for runtime {runtime_key!r}: not checked "
                                   "(tables exist for tflite and torch-lite artifacts)")
    return asdict(report)


def parse_declared(runtime_key: str, declared: str) -> tuple[str, Any]:
    """``"tflite-runtime==2.14"`` -> ("tflite-runtime", SpecifierSet("==2.14")); one-line error otherwise."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(declared.strip())
    except InvalidRequirement:
        raise CompatibilityError(f"--runtime {declared!r}: not a requirement like 'ai-edge-litert>=2.3'") from None
    known = FAMILIES.get(runtime_key, {})
    family = known.get(req.name.lower().replace("_", "-"))
    if family is None:
        names = ", ".join(sorted(set(known))) or "none"
        raise CompatibilityError(f"--runtime {declared!r}: unknown runtime for {runtime_key} artifacts (known: {names})")
    return family, req.specifier


# ---------------------------------------------------------------- TFLite
def tflite_ops(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Operator codes of a ``.tflite`` file (sorted) with the version written in the file and the version
    its tensor types require (see the module docstring), and its ``min_runtime_version`` metadata."""
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    if not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise CompatibilityError(f"{path}: not a TFLite flatbuffer")
    model = schema.Model.GetRootAs(buf, 0)
    codes = list(zip(opcode_names(model), (int(model.OperatorCodes(i).Version())
                                           for i in range(model.OperatorCodesLength()))))
    needed: dict[tuple[str, int], tuple[int, str | None]] = {key: (key[1], None) for key in codes}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for j in range(graph.OperatorsLength()):
            op = graph.Operators(j)
            key = codes[op.OpcodeIndex()]
            implied, why = _type_implied_version(key[0], op, graph)
            if implied > needed[key][0]:
                needed[key] = (implied, why)
    facts: dict[str, Any] = {}
    for i in range(model.MetadataLength()):
        meta = model.Metadata(i)
        if meta.Name() == b"min_runtime_version":
            data = model.Buffers(meta.Buffer()).DataAsNumpy()
            if not isinstance(data, int):
                facts["min_runtime_version"] = data.tobytes().rstrip(b"\0").decode()
    ops = []
    for (name, version), (required, why) in sorted(needed.items()):
        entry: dict[str, Any] = {"op": name, "version": version, "required_version": required}
        if why:
            entry["required_because"] = why
        ops.append(entry)
    return ops, facts


def _type_implied_version(name: str, op, graph) -> tuple[int, str]:
    """First matching rule of ``tflite_type_versions.json`` for one operator: (version, why); (1, "") if none."""
    from ai_edge_litert import schema_py_generated as schema

    rules = _load_table(TFLITE_TYPE_RULES)["ops"].get(name)
    if not rules:
        return 1, ""
    type_names = tensor_type_names()
    tensors = {f"in{i}": t for i, t in enumerate(op.InputsAsNumpy() if op.InputsLength() else [])}
    tensors.update({f"out{i}": t for i, t in enumerate(op.OutputsAsNumpy() if op.OutputsLength() else [])})
    tensors = {slot: graph.Tensors(int(t)) if t >= 0 else None for slot, t in tensors.items()}
    options = schema.BuiltinOptionsCreator(op.BuiltinOptionsType(), op.BuiltinOptions())

    def type_of(slot: str) -> str | None:
        t = tensors.get(slot)
        return type_names.get(t.Type()) if t is not None else None

    def shape(slot: str) -> list[int]:
        t = tensors.get(slot)
        return list(t.ShapeAsNumpy()) if t is not None and t.ShapeLength() else []

    def quant(slot: str):
        t = tensors.get(slot)
        return t.Quantization() if t is not None else None

    def per_channel(slot: str) -> bool:
        q, dims = quant(slot), shape(slot)
        return (q is not None and q.ScaleLength() > 1 and q.QuantizedDimension() < len(dims)
                and q.ScaleLength() == dims[q.QuantizedDimension()])

    def scale(slot: str) -> float:
        q = quant(slot)
        return float(q.Scale(0)) if q is not None and q.ScaleLength() else 0.0

    def option(attr: str):
        return getattr(options, attr, 0) if options is not None else 0

    inputs = [s for s in tensors if s.startswith("in")]
    checks: dict[str, Callable[[Any], bool]] = {
        "quantized": lambda slots: any(quant(s) is not None for s in slots),
        "not_quantized": lambda slots: all(quant(s) is None for s in slots),
        "per_channel": lambda slots: all(per_channel(s) for s in slots),
        "sparse": lambda slots: all(tensors.get(s) is not None and tensors[s].Sparsity() is not None for s in slots),
        "inputs_count": lambda n: len(inputs) == n,
        "in0_rank_gt": lambda n: len(shape("in0")) > n,
        "input_rank_eq": lambda n: any(len(shape(f"in{i}")) == n for i in range(3)),
        "broadcast_rank_gt": lambda n: (len(inputs) >= 2 and shape("in0") != shape("in1")
                                        and max(len(shape(s)) for s in inputs) > n),
        "mul_rescale_ge_1": lambda want: want == (scale("in0") != 0 and scale("in1") != 0 and scale("out0") != 0
                                                  and scale("in0") * scale("in1") / scale("out0") >= 1.0),
        "option_true": lambda attrs: all(bool(option(a)) for a in attrs),
        "option_false": lambda attrs: not any(bool(option(a)) for a in attrs),
        "option_in": lambda spec: all(option(a) in values for a, values in spec.items()),
    }

    def holds(key: str, want: Any) -> bool:
        if key in ("in0", "in1", "in2", "out0", "out1"):
            return type_of(key) in ([want] if isinstance(want, str) else want)
        return checks[key](want)

    for rule in rules:
        if all(holds(k, v) for k, v in rule["when"].items()):
            shown = " x ".join(str(type_of(s)) for s in inputs if tensors[s] is not None)
            return rule["version"], f"{shown} -> {type_of('out0')}: op_version.cc {rule['cite']}"
    return 1, ""


@lru_cache(maxsize=None)
def _load_table(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _check_tflite(path: Path, declared: str | None) -> CompatReport:
    ops, facts = tflite_ops(path)
    report = CompatReport(declared=declared, compatible=None, ops=ops, artifact=facts)
    if not declared:
        return report
    family, spec = parse_declared("tflite", declared)
    runtimes: dict[str, dict[str, dict[str, int | None]]] = _load_table(TFLITE_TABLE)["runtimes"]
    if family in VERSIONLESS:  # present or not; one entry per op name
        needed = list({op["op"]: op for op in ops}.values())
        present = lambda table, op: op["op"] in table  # noqa: E731
        report = _verdict(report, family, spec, runtimes[family], needed, present, describe=lambda op: op["op"],
                          remedy_tables={family: runtimes[family]})
        if report.remedy and report.remedy.startswith("no known"):
            missing = [op["op"] for op in needed if not any(present(t, op) for t in runtimes[family].values())]
            report.remedy = (f"none: no known {family} release has a kernel for {', '.join(missing)}; "
                             f"the model has to be exported without these ops")
        signatures = _signature_keys(path)
        if len(signatures) > 1:  # the micro interpreter has no signature runners: it runs subgraph 0
            report.compatible = False
            report.problems.append(f"{family} runs a model's first subgraph only; this file holds {len(signatures)} "
                                   f"signatures ({', '.join(signatures)}): pack it with --buckets none (one static shape)")
            report.remedy = "--buckets none"
        return report
    supports = lambda table, op: op["op"] in table and op["required_version"] <= table[op["op"]]  # noqa: E731
    versioned = {f: t for f, t in runtimes.items() if f not in VERSIONLESS}
    report = _verdict(report, family, spec, runtimes[family], ops, supports, describe=_describe_tflite_op,
                      remedy_tables=versioned)
    return _check_kernels(report, path, family, spec, ops, supports, versioned)


def _signature_keys(path: Path) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    return [model.SignatureDefs(i).SignatureKey().decode() for i in range(model.SignatureDefsLength())]


def _check_kernels(report: CompatReport, path: Path, family: str, spec, ops: list[dict[str, Any]],
                   supports_op: Callable[[dict, dict], bool], op_tables: dict[str, dict]) -> CompatReport:
    """Op versions say which registrations a runtime needs, not which tensor types its kernels take (see
    ``tflite_kernels``): fail a release known, from probing, to reject one of the artifact's signatures."""
    from .tflite_kernels import load_kernel_table, operator_signatures

    rows: dict[str, dict[str, dict]] = load_kernel_table()["runtimes"]
    signatures = operator_signatures(Path(path).read_bytes())
    lower, upper = _bounds(sorted(rows.get(family, {}), key=_release_key), spec)
    low, up = rows.get(family, {}).get(lower or "", {}), rows.get(family, {}).get(upper or "", {})
    low_ok, up_ok = set(low.get("ok", ())), set(up.get("ok", ()))
    failing, unknown, unprobed = [], [], []
    for sig in (s["signature"] for s in signatures):
        if sig in low_ok:
            continue
        if sig in up.get("fail", {}):
            if not up["fail"][sig].startswith(_UNREGISTERED):  # a missing op version: the op table's verdict
                failing.append(sig)
        elif sig in up_ok or sig in low.get("fail", {}):
            unknown.append(sig)
        else:
            unprobed.append(sig)
    release = upper if failing else (lower or upper)
    report.kernels = {"checked_against": f"{family}=={release}" if release else None,
                      "signatures": signatures, "failing": failing, "undecided": unknown, "not_probed": unprobed}
    for sig in failing:
        report.problems.append(f"{sig} is rejected by the kernel of {family} {upper} "
                               f"(probed: {up['fail'][sig][:160]})")
    if failing:
        report.compatible = False
        report.remedy = _kernel_remedy(family, failing, rows, ops, supports_op, op_tables) or report.remedy
    elif unknown and report.compatible:
        report.compatible = None
        report.problems.append(f"cannot decide {len(unknown)} operator signature(s) for {report.declared}: "
                               f"rejected by {family} {lower}, loaded by {upper}: {', '.join(unknown[:5])}")
    return report


def _kernel_remedy(family: str, failing: list[str], rows: dict[str, dict[str, dict]], ops: list[dict[str, Any]],
                   supports_op: Callable[[dict, dict], bool], op_tables: dict[str, dict]) -> str | None:
    """The oldest probed release (same family first) whose kernels ran every failing signature and whose op
    table has every op version."""
    for fam in [family] + sorted(f for f in rows if f != family):
        for release in sorted(rows[fam], key=_release_key):
            table = op_tables.get(fam, {}).get(release)
            if (table is not None and set(failing) <= set(rows[fam][release]["ok"])
                    and all(supports_op(table, op) for op in ops)):
                return f"declare {fam}>={release} on the device" if fam == family else \
                    f"no {family} release runs it; switch the device to {fam}>={release}"
    return None


def kernel_coverage_note(report: dict[str, Any]) -> str | None:
    """A line saying which of the artifact's operator signatures no probe has run on the checked release."""
    kernels = report.get("kernels") or {}
    unprobed = kernels.get("not_probed") or []
    if not unprobed or not kernels.get("checked_against"):
        return None
    shown = ", ".join(unprobed[:3]) + (" ..." if len(unprobed) > 3 else "")
    return (f"{len(unprobed)} of {len(kernels.get('signatures', []))} operator signatures never probed on "
            f"{kernels['checked_against']} (op versions checked, kernel types not): {shown}")


def _describe_tflite_op(op: dict[str, Any]) -> str:
    if op["required_version"] > op["version"]:
        return (f"{op['op']} version {op['required_version']} (needed for its {op['required_because']}; "
                f"the file says {op['version']})")
    return f"{op['op']} version {op['version']}"


# ---------------------------------------------------------------- PyTorch Lite
def ptl_info(path: Path) -> tuple[int, list[dict[str, Any]]]:
    """Bytecode version and root operators (name, number of schema arguments) of a ``.ptl``, read from the
    file itself without torch (``edgepack check`` runs on devices): ``bytecode.pkl`` in the zip holds
    ``(version, (method, (("instructions", ...), ("operators", ((name, overload, n_args), ...)), ...)), ...)``.
    Tensors and classes in it are not rebuilt. The same answers as ``torch.jit.mobile``'s
    ``_get_model_bytecode_version`` / ``_get_model_ops_and_info`` (checked by the tests)."""
    import io
    import pickle
    import zipfile

    class _Opaque:  # whatever torch would rebuild (tensors, custom classes): not needed for the verdict
        def __init__(self, *args: Any, **kwargs: Any) -> None: ...

        def __setstate__(self, state: Any) -> None: ...

    class _BytecodeReader(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            return _Opaque

        def persistent_load(self, pid: Any) -> Any:
            return _Opaque()

    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rpartition("/")[2] == "bytecode.pkl" and n.count("/") <= 1]
            if not names:
                raise CompatibilityError(f"{path}: no bytecode.pkl (not a PyTorch Lite .ptl file)")
            data = archive.read(names[0])
        bytecode = _BytecodeReader(io.BytesIO(data)).load()
        version = int(bytecode[0])
        ops: dict[str, int | None] = {}
        for method in bytecode[1:]:
            for op in dict(method[1]).get("operators", ()):
                ops[f"{op[0]}.{op[1]}" if op[1] else op[0]] = int(op[2]) if len(op) > 2 else None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, OSError, TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, CompatibilityError):
            raise
        raise CompatibilityError(f"{path}: unreadable .ptl ({type(exc).__name__}: {exc})") from None
    return version, [{"op": name, "version": n_args} for name, n_args in sorted(ops.items())]


def _check_torch_lite(path: Path, declared: str | None) -> CompatReport:
    version, ops = ptl_info(path)
    report = CompatReport(declared=declared, compatible=None, ops=ops, artifact={"bytecode_version": version})
    if not declared:
        return report
    family, spec = parse_declared("torch-lite", declared)
    rows = _load_table(TORCH_LITE_TABLE)["runtimes"][family]
    tables = {release: {"bytecode": row["max_bytecode"], "min_bytecode": row["min_bytecode"]}
              for release, row in rows.items()}
    needed = [{"op": "bytecode", "version": version}]
    supports = lambda t, op: t["min_bytecode"] <= op["version"] <= t["bytecode"]  # noqa: E731
    report = _verdict(report, family, spec, tables, needed, supports,
                      describe=lambda op: f"bytecode version {op['version']}", remedy_tables={family: tables})
    if report.compatible is False:
        floor_max = min(t["bytecode"] for t in tables.values())
        report.remedy = (f"{report.remedy}; or backport the file: "
                         f"torch.jit.mobile._backport_for_mobile(src, dst, to_version={floor_max}) "
                         f"(or the version your runtime reads)")
    return report


# ---------------------------------------------------------------- verdicts
def _verdict(report: CompatReport, family: str, spec, tables: dict[str, dict], needed: list[dict[str, Any]],
             supports: Callable[[dict, dict], bool], describe: Callable[[dict], str],
             remedy_tables: dict[str, dict[str, dict]]) -> CompatReport:
    """Check ``needed`` against the oldest release ``spec`` admits (see the module docstring)."""
    releases = sorted(tables, key=_release_key)
    lower, upper = _bounds(releases, spec)
    report.checked_against = f"{family}=={lower}" if lower else (f"{family}=={upper} (upper bound)" if upper else None)
    unknown, failing = [], []
    for op in needed:
        if lower is not None and supports(tables[lower], op):
            continue
        if upper is not None and not supports(tables[upper], op):
            failing.append(op)
        else:
            unknown.append(op)
    for op in failing:
        report.problems.append(f"{describe(op)} is not supported by {family} {upper} (the declaration admits it)")
    if failing:
        report.compatible = False
        report.remedy = _remedy(failing, family, remedy_tables, supports)
    elif unknown:
        shown = ", ".join(describe(op) for op in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        report.problems.append(f"cannot decide {len(unknown)} op(s) for {report.declared}: no known {family} release "
                               f"at or below its lowest admitted version (known: {', '.join(releases)}): {shown}")
    else:
        report.compatible = True
    return report


def _bounds(releases: list[str], spec) -> tuple[str | None, str | None]:
    """(newest known release at or below the declaration's floor, oldest known release it admits)."""
    from packaging.version import Version

    floor, exclusive = _spec_floor(spec)
    lower = next((r for r in reversed(releases) if floor is not None and Version(r) <= floor
                  and not (exclusive and Version(r) == floor)), None)
    upper = next((r for r in releases if floor is None or Version(r) > floor
                  or (not exclusive and Version(r) == floor)), None)
    return lower, upper


def _remedy(failing: list[dict], family: str, all_tables: dict[str, dict[str, dict]],
            supports: Callable[[dict, dict], bool]) -> str:
    """The oldest known release (same family first) that loads every failing op."""
    options = []
    for fam in [family] + sorted(f for f in all_tables if f != family):
        for release in sorted(all_tables[fam], key=_release_key):
            if all(supports(all_tables[fam][release], op) for op in failing):
                options.append(f"{fam}>={release}")
                break
    if not options:
        return "no known runtime release loads it: re-export with a target that avoids these ops"
    if options[0].startswith(family):
        return f"declare {options[0]} on the device"
    return f"no {family} release loads it; switch the device to {options[0]}"


def _release_key(release: str):
    from packaging.version import Version

    return Version(release)


def _spec_floor(spec) -> tuple[Any, bool]:
    """Lowest version a SpecifierSet admits: (Version or None, exclusive?)."""
    from packaging.version import Version

    floor, exclusive = None, False
    for s in spec:
        if s.operator in (">=", "==", "~=", "===", ">"):
            v = Version(s.version.rstrip(".*").rstrip("."))
            if floor is None or v > floor or (v == floor and s.operator == ">"):
                floor, exclusive = v, s.operator == ">"
    return floor, exclusive


# ---------------------------------------------------------------- probing a runtime's registry
def probe_models(max_version: int = PROBE_MAX_VERSION) -> dict[tuple[str, int], bytes]:
    """One single-op flatbuffer per (builtin op, version): the questions asked of a runtime's resolver."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    out = {}
    for code, name in sorted(builtin_names().items()):
        if name in _NOT_PROBED:
            continue
        for version in range(1, max_version + 1):
            tensors = []
            for tname in ("x", "y"):
                t = schema.TensorT()
                t.shape, t.type, t.name, t.buffer = [1], schema.TensorType.FLOAT32, tname, 0
                tensors.append(t)
            op = schema.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
            graph = schema.SubGraphT()
            graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, [0], [1], [op]
            opcode = schema.OperatorCodeT()
            opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, min(code, 127), version
            model = schema.ModelT()
            model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [opcode], [graph], [schema.BufferT()]
            builder = flatbuffers.Builder(256)
            builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
            out[(name, version)] = bytes(builder.Output())
    return out


def probe_interpreter(load: Callable[[bytes], Any], models: dict[tuple[str, int], bytes]) -> dict[str, int]:
    """Highest version of each op that ``load`` (an Interpreter constructor) resolves.

    Only "op not found" errors mean unsupported; other construction errors
    (e.g. missing builtin options in the probe model) come after resolution.
    """
    table: dict[str, int] = {}
    for (name, version) in sorted(models):
        if version > 1 and table.get(name) != version - 1:
            continue  # resolution stopped at a lower version
        try:
            load(models[(name, version)])
        except Exception as exc:  # noqa: BLE001 - each runtime raises its own type
            text = str(exc)
            if any(marker in text.lower() for marker in _UNSUPPORTED_MARKERS):
                continue
        table[name] = version
    return table


def installed_litert_table() -> dict[str, int]:
    """Probe the ai-edge-litert in this environment (what the table test compares against)."""
    from ai_edge_litert.interpreter import Interpreter

    return probe_interpreter(lambda content: Interpreter(model_content=content), probe_models())

