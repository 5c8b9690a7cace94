"""onnx-fp32 / onnx-int8 on a tiny random BERT, run through the device_bench onnxruntime runner."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import random_token_inputs, tiny_bert_export_context  # noqa: E402
from device_bench.runners import load_runner  # noqa: E402
from targets import get_target  # noqa: E402

SEQ = 16
NAMES = ["input_ids", "attention_mask"]


def _inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    return random_token_inputs(n, SEQ, seed)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return tiny_bert_export_context(tmp_path_factory.mktemp("onnx"), SEQ, _inputs(8, seed=1))[0]


@pytest.mark.parametrize("name,min_cos", [("onnx-fp32", 0.99999), ("onnx-int8", 0.99)])
def test_artifact_runs_in_device_runner_and_agrees(ctx, name, min_cos):
    path = ctx.workdir / f"{name}.onnx"
    result = get_target(name).export(ctx, path)
    assert result.details["opsets"]["ai.onnx"] >= 17
    runner = load_runner("onnxruntime", path, threads=1)
    held_out = _inputs(12, seed=5)
    with torch.inference_mode():
        ref = ctx.wrapper(*(torch.from_numpy(held_out[n]) for n in NAMES)).numpy()
    out = np.concatenate([runner.run({n: held_out[n][i:i + 1] for n in NAMES}) for i in range(12)])
    assert out.dtype == np.float32 and out.shape == ref.shape
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= min_cos, cos
    if name == "onnx-int8":
        import onnx

        graph = onnx.load(str(path)).graph
        inits = {i.data_type for i in graph.initializer}  # MatMulNBits packs its 8-bit blocks as uint8
        assert inits & {onnx.TensorProto.INT8, onnx.TensorProto.UINT8} and result.precision == "dynamic-int8"
        assert result.details["scheme"] == "blockwise" and any(n.op_type == "MatMulNBits" for n in graph.node)
        assert path.stat().st_size < result.details["fp32_onnx_size_bytes"] / 2


def test_runner_maps_inputs_by_position_and_rejects_wrong_arity(ctx):
    path = ctx.workdir / "pos.onnx"
    get_target("onnx-fp32").export(ctx, path)
    runner = load_runner("onnxruntime", path)
    sample = _inputs(1, seed=9)
    by_name = runner.run(sample)
    by_position = runner.run({"serving_default_args_0": sample["input_ids"], "x": sample["attention_mask"]})
    np.testing.assert_array_equal(by_name, by_position)
    with pytest.raises(ValueError, match="takes 2 inputs"):
        runner.run({"input_ids": sample["input_ids"]})
