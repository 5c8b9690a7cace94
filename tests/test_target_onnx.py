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


@pytest.mark.parametrize("scheme,int8_ops", [("blockwise", {"MatMulNBits": 6, "QEmbedLayerNormalization": 1}),
                                             ("dynamic", {"MatMulInteger": 6, "QAttention": 2,
                                                          "QEmbedLayerNormalization": 1})])
def test_fused_int8_fuses_every_layer_and_agrees(ctx, scheme, int8_ops):
    """fuse=bert: onnxruntime's BERT fusion recognises the whole encoder (the export wrapper feeds ids and mask),
    the quantizers make the fused graph int8, and the device runner (plain onnxruntime) runs it."""
    import onnx

    # a dynamic sequence axis: the static export's folded mask is not the pattern the attention fusion matches
    fused_ctx = type(ctx)(**{**ctx.__dict__, "options": {"fuse": "bert", "scheme": scheme}, "buckets": [SEQ]})
    path = ctx.workdir / f"fused-{scheme}.onnx"
    result = get_target("onnx-int8").export(fused_ctx, path)
    assert result.details["fuse"] == "bert"
    assert result.details["fused_ops"] == {"EmbedLayerNormalization": 1, "Attention": 2, "SkipLayerNormalization": 4,
                                           "BiasGelu": 2}
    graph = onnx.load(str(path)).graph
    counts = {op: sum(n.op_type == op for n in graph.node) for op in int8_ops}
    assert counts == int8_ops
    assert not any(n.op_type in ("LayerNormalization", "Softmax", "Erf") for n in graph.node)
    assert any("BERT fusion: 1 EmbedLayerNormalization, 2 Attention" in note for note in result.notes)
    assert any("Q/K/V weights stay float" in note for note in result.notes) == (scheme == "blockwise")
    # fused ops carry their layer's path: the precision fallback's groups reach them
    from targets.fallback import op_group
    from targets.onnx_int8 import quantizable_nodes

    fused_fp32, _ = get_target("onnx-int8")._fp32(fused_ctx)
    groups = {op_group(name) for name in quantizable_nodes(fused_fp32, scheme)}
    assert groups == {"embeddings", "layer.0", "layer.1"}
    runner = load_runner("onnxruntime", path, threads=1)
    held_out = _inputs(12, seed=5)
    with torch.inference_mode():
        ref = ctx.wrapper(*(torch.from_numpy(held_out[n]) for n in NAMES)).numpy()
    out = np.concatenate([runner.run({n: held_out[n][i:i + 1, :int(held_out["attention_mask"][i].sum())]
                                      for n in NAMES}) for i in range(12)])
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99, cos
