"""Runtime compatibility: shipped op tables match the installed runtime; verdicts on real artifacts."""
from __future__ import annotations

import json

import pytest

from targets.compat import (
    TFLITE_TABLE,
    CompatibilityError,
    check_compatibility,
    installed_litert_table,
    parse_declared,
)

litert_torch = pytest.importorskip("litert_torch")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tflite_artifact(tmp_path_factory):
    """A real litert-torch output with a gather (the op family of the issue's GATHER_ND v5 failure)."""

    class Lookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(50, 8))

        def forward(self, ids):
            return torch.index_select(self.table, 0, ids.reshape(-1).long()).sum(0, keepdim=True)

    path = tmp_path_factory.mktemp("compat") / "m.tflite"
    litert_torch.convert(Lookup().eval(), (torch.zeros(1, 4, dtype=torch.int32),)).export(str(path))
    return path


def test_table_for_installed_litert_matches_what_it_loads():
    from importlib import metadata

    version = metadata.version("ai-edge-litert")
    shipped = json.loads(TFLITE_TABLE.read_text())["runtimes"]["ai-edge-litert"]
    assert version in shipped, f"no shipped table for the installed ai-edge-litert {version}"
    assert installed_litert_table() == shipped[version]


def test_ops_are_listed_without_a_declaration(tflite_artifact):
    report = check_compatibility("tflite", tflite_artifact, None)
    assert report["compatible"] is None and report["problems"] == []
    assert {"op", "version", "required_version"} <= set(report["ops"][0])
    assert any(o["op"] == "GATHER_ND" for o in report["ops"])


def test_real_artifact_verdicts_follow_the_tables(tflite_artifact):
    ok = check_compatibility("tflite", tflite_artifact, "ai-edge-litert>=2.3")
    assert ok["compatible"] is True and ok["checked_against"] == "ai-edge-litert==2.3.0"
    table = json.loads(TFLITE_TABLE.read_text())["runtimes"]["tflite-runtime"]["2.14.0"]
    too_new = [o for o in ok["ops"] if o["required_version"] > table.get(o["op"], 0)]
    old = check_compatibility("tflite", tflite_artifact, "tflite-runtime==2.14")
    assert old["compatible"] is (not too_new)
    assert len(old["problems"]) == len(too_new)


def _one_op_model(tmp_path, op: str, version: int):
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from targets.compat import probe_models

    model = schema.ModelT.InitFromPackedBuf(probe_models(max_version=1)[(op, 1)], 0)
    model.operatorCodes[0].version = version
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / f"{op}_v{version}.tflite"
    path.write_bytes(bytes(builder.Output()))
    return path


def test_gather_nd_v5_rejected_for_tflite_runtime_214(tmp_path):
    """The issue's failure: tflite-runtime 2.14 has no GATHER_ND v5; LiteRT does."""
    path = _one_op_model(tmp_path, "GATHER_ND", 5)
    bad = check_compatibility("tflite", path, "tflite-runtime==2.14")
    assert bad["compatible"] is False
    assert bad["problems"] == ["GATHER_ND version 5 is not supported by tflite-runtime 2.14.0 (the declaration admits it)"]
    assert bad["remedy"] == "no tflite-runtime release loads it; switch the device to ai-edge-litert>=1.0.1"
    assert check_compatibility("tflite", path, "ai-edge-litert>=2.3")["compatible"] is True


def test_synthetic_too_new_op_version_is_flagged(tmp_path):
    """An op version above every table: incompatible for any declaration, with no runtime to suggest."""
    path = _one_op_model(tmp_path, "ADD", 12)
    report = check_compatibility("tflite", path, "ai-edge-litert>=2.3")
    assert report["compatible"] is False and "ADD version 12" in report["problems"][0]
    assert "no known runtime release" in report["remedy"]


def test_between_known_releases_is_undecided_not_guessed(tflite_artifact):
    report = check_compatibility("tflite", tflite_artifact, "ai-edge-litert>=0.9")
    assert report["compatible"] in (None, False)
    if report["compatible"] is None:
        assert "cannot decide" in report["problems"][0]


@pytest.mark.parametrize("declared", ["foo>=1", "ai-edge-litert >=>= 2"])
def test_bad_declaration_is_one_line_error(tflite_artifact, declared):
    with pytest.raises(CompatibilityError) as err:
        check_compatibility("tflite", tflite_artifact, declared)
    assert "\n" not in str(err.value) and declared in str(err.value)


# ---------------------------------------------------------------- tflite-micro
MICRO = "tflite-micro==0.dev20261023182759"


@pytest.mark.parametrize("declared", ["tflite-micro", "tflite-micro>=0.dev20261023", MICRO, "tflite_micro", "tflm"])
def test_tflite_micro_declarations_parse(declared):
    family, _ = parse_declared("tflite", declared)
    assert family == "tflite-micro"


def test_micro_table_is_versionless_and_records_its_derivation():
    table = json.loads(TFLITE_TABLE.read_text())
    rows = table["runtimes"]["tflite-micro"]["0.dev20261023182759"]
    assert set(rows.values()) == {None} and {"ADD", "FULLY_CONNECTED", "BATCH_MATMUL"} <= set(rows)
    assert not {"GELU", "SELECT"} & set(rows)
    assert table["tflite-micro"]["versions_checked"] is False
    assert "derive_tflite_micro_table.py" in table["tflite-micro"]["derivation"]


def test_micro_flags_ops_it_lacks_in_a_real_artifact(tflite_artifact):
    """litert-torch lowers index_select's bounds check to SELECT; TFLM has only SELECT_V2."""
    for declared in (MICRO, "tflite-micro>=0.dev20261023", "tflite-micro"):
        report = check_compatibility("tflite", tflite_artifact, declared)
        assert report["compatible"] is False, declared
        assert report["problems"] == [f"SELECT is not supported by tflite-micro 0.dev20261023182759 "
                                      f"(the declaration admits it)"]
        assert report["remedy"].startswith("none: no known tflite-micro release has a kernel for SELECT")


def test_micro_passes_a_real_artifact_with_supported_ops(tmp_path):
    path = tmp_path / "mlp.tflite"
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    litert_torch.convert(mlp, (torch.zeros(1, 4),)).export(str(path))
    report = check_compatibility("tflite", path, MICRO)
    assert report["compatible"] is True and report["problems"] == []
    assert report["checked_against"] == MICRO
    # no version at or below an open floor is known: not decided, never guessed
    assert check_compatibility("tflite", path, "tflite-micro")["compatible"] is None


@pytest.mark.slow
def test_micro_refuses_a_multi_signature_file(tmp_path):
    """Buckets are signatures; the micro interpreter runs the first subgraph only: one static shape for an MCU."""
    path = tmp_path / "two.tflite"
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    litert_torch.signature("seq1", mlp, (torch.zeros(1, 4),)).signature("seq2", mlp, (torch.zeros(2, 4),)) \
        .convert().export(str(path))
    report = check_compatibility("tflite", path, MICRO)
    assert report["compatible"] is False and report["remedy"] == "--buckets none"
    assert report["problems"] == ["tflite-micro runs a model's first subgraph only; this file holds 2 signatures "
                                  "(seq1, seq2): pack it with --buckets none (one static shape)"]


def test_micro_ignores_op_versions(tmp_path):
    """TFLM resolves by builtin code only (the probe saw the same at versions 1 and 99)."""
    assert check_compatibility("tflite", _one_op_model(tmp_path, "ADD", 12), MICRO)["compatible"] is True
    report = check_compatibility("tflite", _one_op_model(tmp_path, "GELU", 1), MICRO)
    assert report["compatible"] is False and report["problems"][0].startswith("GELU is not supported")


def test_micro_probe_reproduces_the_table(tmp_path):
    """Re-ask the runtime about a few ops; needs a venv with tflite-micro (EDGEPACK_TFLM_PYTHON)."""
    import importlib.util
    import os
    from pathlib import Path

    python = os.environ.get("EDGEPACK_TFLM_PYTHON")
    if not python:
        pytest.skip("set EDGEPACK_TFLM_PYTHON to a python with tflite-micro==0.dev20261023182759")
    script = Path(__file__).resolve().parents[1] / "scripts" / "derive_tflite_micro_table.py"
    spec = importlib.util.spec_from_file_location("derive_tflm", script)
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    from targets.compat import probe_models

    models = probe_models(max_version=1)
    for op, expected in (("ADD", "resolved"), ("SELECT_V2", "resolved"), ("GELU", "absent"), ("SELECT", "absent")):
        for version in (1, 99):
            path = tmp_path / f"{op}_{version}.tflite"
            path.write_bytes(derive.sentinel_model(models[(op, 1)], version))
            assert derive.probe(python, path) == expected, (op, version)


# ---------------------------------------------------------------- versions implied by tensor types
def _typed_model(tmp_path, op: str, inputs: list[str], output: str, quantized: bool = True, options=None):
    """A one-op model whose tensors have the given types (what ai-edge-quantizer leaves: version 1)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from targets.compat import builtin_names

    code = {v: k for k, v in builtin_names().items()}[op]
    tensors = []
    for i, type_name in enumerate(inputs + [output]):
        t = schema.TensorT()
        t.shape, t.type, t.name, t.buffer = [1, 4], getattr(schema.TensorType, type_name), f"t{i}", 0
        if quantized:
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [0.01], [0]
        tensors.append(t)
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, list(range(len(inputs))), [len(inputs)]
    if options is not None:
        operator.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__[:-1])
        operator.builtinOptions = options
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs = tensors, list(range(len(inputs))), [len(inputs)]
    graph.operators = [operator]
    opcode = schema.OperatorCodeT()
    opcode.builtinCode, opcode.deprecatedBuiltinCode, opcode.version = code, min(code, 127), 1
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [opcode], [graph], [schema.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / f"{op}_{'_'.join(inputs)}.tflite"
    path.write_bytes(bytes(builder.Output()))
    return path


def _required(path) -> dict:
    (entry,) = check_compatibility("tflite", path, None)["ops"]
    return entry


def test_int16_add_requires_the_version_op_version_cc_gives(tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    general = schema.AddOptionsT()
    general.potScaleInt16 = False
    entry = _required(_typed_model(tmp_path, "ADD", ["INT16", "INT16"], "INT16", options=general))
    assert (entry["version"], entry["required_version"]) == (1, 3)
    assert "pot_scale_int16" in entry["required_because"] and "INT16 x INT16 -> INT16" in entry["required_because"]
    # power-of-two int16 scales (the schema default) keep version 1; unquantized int16 is version 5
    assert _required(_typed_model(tmp_path, "ADD", ["INT16", "INT16"], "INT16", options=schema.AddOptionsT()))[
        "required_version"] == 1
    assert _required(_typed_model(tmp_path, "ADD", ["INT16", "INT16"], "INT16", quantized=False))[
        "required_version"] == 5
    assert _required(_typed_model(tmp_path, "ADD", ["FLOAT32", "FLOAT32"], "FLOAT32", quantized=False))[
        "required_version"] == 1


def test_required_version_decides_the_verdict(tmp_path):
    """int16 RSQRT needs version 3; tflite-runtime 2.14 registers RSQRT up to 2, although the file says 1."""
    path = _typed_model(tmp_path, "RSQRT", ["INT16"], "INT16")
    report = check_compatibility("tflite", path, "tflite-runtime==2.14")
    assert report["compatible"] is False
    assert report["problems"][0].startswith("RSQRT version 3 (needed for its INT16 -> INT16: op_version.cc "
                                            "inputs[0].type == kTfLiteInt16; the file says 1) is not supported "
                                            "by tflite-runtime 2.14.0")
    assert report["remedy"] == "no tflite-runtime release loads it; switch the device to ai-edge-litert>=1.0.1"
    assert check_compatibility("tflite", path, "ai-edge-litert>=2.3")["compatible"] is True


def test_type_rules_cite_op_version_cc_and_cover_the_quantizer_ops():
    from targets.compat import TFLITE_TYPE_RULES

    rules = json.loads(TFLITE_TYPE_RULES.read_text())
    assert "op_version.cc" in rules["source"]
    needed = ("FULLY_CONNECTED BATCH_MATMUL ADD SUB MUL DIV SOFTMAX GELU MEAN SUM RSQRT SQRT SQUARED_DIFFERENCE "
              "QUANTIZE DEQUANTIZE GATHER GATHER_ND EMBEDDING_LOOKUP RESHAPE TRANSPOSE CONCATENATION SELECT_V2 "
              "MAXIMUM MINIMUM TANH LOGISTIC").split()
    assert set(needed) <= set(rules["ops"])
    assert all(rule["cite"] and rule["version"] > 1 for op in rules["ops"].values() for rule in op)


@pytest.fixture(scope="module")
def full_int_artifact(tmp_path_factory):
    """A real tflite-int8-full export of a tiny random BERT (the MiniLM op list, ~15 s)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("ai_edge_quantizer")
    import numpy as np

    from packager.tasks import get_task
    from targets import ExportContext, get_target

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, attn_implementation="eager")
    model = transformers.BertModel(config).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 200, (24, 16)).astype(np.int32)
    calib = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    work = tmp_path_factory.mktemp("full")
    ctx = ExportContext(wrapper=get_task("feature-extraction").make_wrapper(model), hf_model=model,
                        task=get_task("feature-extraction"), seq_len=16, input_names=["input_ids", "attention_mask"],
                        example_inputs={k: v[:1] for k, v in calib.items()}, calibration=calib, workdir=work,
                        options={"calib_samples": 20})
    path = work / "model.tflite"
    get_target("tflite-int8-full").export(ctx, path)
    return path


@pytest.mark.slow
def test_full_int_artifact_keeps_float_versions_and_gets_required_ones(full_int_artifact):
    ops = {o["op"]: o for o in check_compatibility("tflite", full_int_artifact, None)["ops"]}
    for name in ("ADD", "SOFTMAX", "BATCH_MATMUL", "MUL"):
        assert ops[name]["version"] == 1 and ops[name]["required_version"] >= 2, ops[name]
    assert "op_version.cc" in ops["SOFTMAX"]["required_because"]
    assert check_compatibility("tflite", full_int_artifact, "ai-edge-litert>=2.3")["compatible"] is True
    micro = check_compatibility("tflite", full_int_artifact, "tflite-micro>=0.dev20261023")
    assert micro["compatible"] is False
    assert {p.split()[0] for p in micro["problems"]} == {"GELU", "SELECT"}


@pytest.fixture(scope="module")
def ptl_artifact(tmp_path_factory):
    module = torch.jit.script(torch.nn.Linear(4, 2).eval())
    path = tmp_path_factory.mktemp("ptl") / "m.ptl"
    module._save_for_lite_interpreter(str(path))
    return path


def test_installed_torch_row_loads_every_bytecode_version_in_range(ptl_artifact, tmp_path):
    from torch.jit.mobile import _backport_for_mobile, _load_for_lite_interpreter

    from targets.compat import TORCH_LITE_TABLE

    rows = json.loads(TORCH_LITE_TABLE.read_text())["runtimes"]["torch"]
    row = rows[torch.__version__.split("+")[0]]
    produced = check_compatibility("torch-lite", ptl_artifact, None)["artifact"]["bytecode_version"]
    assert row["min_bytecode"] <= produced <= row["max_bytecode"]
    for version in range(row["min_bytecode"], produced):
        out = tmp_path / f"v{version}.ptl"
        assert _backport_for_mobile(str(ptl_artifact), str(out), version)
        _load_for_lite_interpreter(str(out))


def test_ptl_bytecode_checked_against_declared_torch(ptl_artifact):
    ok = check_compatibility("torch-lite", ptl_artifact, "torch>=2.13")
    assert ok["compatible"] is True and any(o["op"].startswith("aten::") for o in ok["ops"])
    old = check_compatibility("torch-lite", ptl_artifact, "torch==1.9.0")
    assert old["compatible"] is False
    assert "bytecode version" in old["problems"][0] and "_backport_for_mobile" in old["remedy"]


def test_ptl_info_reads_the_file_as_torch_does_without_torch(ptl_artifact, tiny_bundle, tmp_path):
    """`edgepack check` reads a .ptl's bytecode version and operators from the zip (no torch on a device):
    the same answers as torch.jit.mobile, on every bytecode version the installed torch can backport to."""
    from torch.jit.mobile import _backport_for_mobile, _get_model_bytecode_version, _get_model_ops_and_info

    from targets.compat import ptl_info

    files = [ptl_artifact, tiny_bundle / "torchscript_mobile.ptl"]
    for version in range(5, _get_model_bytecode_version(str(ptl_artifact))):
        out = tmp_path / f"v{version}.ptl"
        assert _backport_for_mobile(str(ptl_artifact), str(out), version)
        files.append(out)
    for path in files:
        version, ops = ptl_info(path)
        assert version == _get_model_bytecode_version(str(path)), path
        expected = {name: info.num_schema_args for name, info in _get_model_ops_and_info(str(path)).items()}
        assert {o["op"]: o["version"] for o in ops} == expected, path


# ---------------------------------------------------------------- kernel signatures (tflite_kernels)
@pytest.mark.slow
def test_cut_operators_keep_each_signature_and_run_on_the_installed_runtime(full_int_artifact, tmp_path):
    """Every operator cut out of a real full-integer artifact is a self-contained one-op model (constants
    inlined from the quantizer's out-of-flatbuffer buffers) with the original signature, and it runs."""
    import sys

    from targets.tflite_kernels import cut_operators, operator_signatures, probe_cut

    buf = full_int_artifact.read_bytes()
    cuts = cut_operators(buf)
    assert sorted(c.signature for c in cuts) == [s["signature"] for s in operator_signatures(buf)]
    assert any(c.signature.startswith("FULLY_CONNECTED INT8 x INT8") or "INT16 x INT8" in c.signature for c in cuts)
    for i, cut in enumerate(cuts):
        assert operator_signatures(cut.model) == [{"signature": cut.signature, "op": cut.op, "count": 1}]
        path = tmp_path / f"{i}.tflite"
        path.write_bytes(cut.model)
        assert probe_cut(sys.executable, path) == {"ok": True}, cut.signature


def test_shipped_kernel_row_for_installed_litert_covers_and_matches(full_int_artifact):
    from importlib import metadata

    from targets.tflite_kernels import load_kernel_table, operator_signatures

    version = metadata.version("ai-edge-litert")
    row = load_kernel_table()["runtimes"]["ai-edge-litert"].get(version)
    assert row is not None, f"no kernel row for the installed ai-edge-litert {version}: run derive_tflite_kernel_table"
    sigs = {s["signature"] for s in operator_signatures(full_int_artifact.read_bytes())}
    assert sigs <= set(row["ok"])  # what the previous test just ran is recorded as running


def test_kernel_rejection_fails_a_declaration_that_op_versions_pass(full_int_artifact):
    """tflite-runtime 2.14 registers SQRT and DIV at these versions but its kernels reject int8 (probed)."""
    report = check_compatibility("tflite", full_int_artifact, "tflite-runtime==2.14")
    assert report["compatible"] is False
    assert report["kernels"]["failing"] and all(" -> " in s for s in report["kernels"]["failing"])
    assert all("rejected by the kernel of tflite-runtime 2.14.0" in p for p in report["problems"])
    assert "SQRT INT8 -> INT8" in report["kernels"]["failing"]
    assert report["remedy"] == "no tflite-runtime release runs it; switch the device to ai-edge-litert>=2.0.3"


def test_kernel_signature_between_releases_is_undecided(full_int_artifact):
    """>=2.0 admits 2.0.x; 1.4.0 rejects SQRT INT8, 2.0.3 runs it: nothing known says how 2.0.0 behaves."""
    report = check_compatibility("tflite", full_int_artifact, "ai-edge-litert>=2.0")
    assert report["compatible"] is None
    assert report["kernels"]["undecided"] == ["SQRT INT8 -> INT8"]
    assert check_compatibility("tflite", full_int_artifact, "ai-edge-litert>=2.0.3")["compatible"] is True


def test_signatures_nobody_probed_are_named_not_judged(tmp_path):
    """An op outside every probed artifact (CUMSUM) is checked by op version only, and the report says so."""
    from targets.compat import kernel_coverage_note

    class Cumsum(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 1)

    path = tmp_path / "cumsum.tflite"
    litert_torch.convert(Cumsum().eval(), (torch.zeros(1, 4),)).export(str(path))
    report = check_compatibility("tflite", path, "ai-edge-litert>=2.3")
    assert report["compatible"] is True
    assert report["kernels"]["not_probed"] == ["CUMSUM FLOAT32 x INT32 -> FLOAT32"]
    note = kernel_coverage_note(report)
    assert note.startswith("1 of 1 operator signatures never probed on ai-edge-litert==2.3.0") and "CUMSUM" in note
