"""Runtime compatibility: shipped op tables match the installed runtime; verdicts on real artifacts."""
from __future__ import annotations

import json

import pytest

from targets.compat import (
    TFLITE_TABLE,
    CompatibilityError,
    check_compatibility,
    installed_litert_table,
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
    assert {"op", "version"} <= set(report["ops"][0])
    assert any(o["op"] == "GATHER_ND" for o in report["ops"])


def test_real_artifact_verdicts_follow_the_tables(tflite_artifact):
    ok = check_compatibility("tflite", tflite_artifact, "ai-edge-litert>=2.3")
    assert ok["compatible"] is True and ok["checked_against"] == "ai-edge-litert==2.3.0"
    table = json.loads(TFLITE_TABLE.read_text())["runtimes"]["tflite-runtime"]["2.14.0"]
    too_new = [o for o in ok["ops"] if o["version"] > table.get(o["op"], 0)]
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
