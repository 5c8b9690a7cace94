"""tflite-int8's Hadamard rotation on a tiny random BERT (width 64): ``rotation_block`` caps the block the rotation
runs in, the artifact of each block runs in the device runner and agrees with the fp32 wrapper, and a block that
is not a power of two is refused by name."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import random_token_inputs as token_inputs
from conftest import tiny_bert_export_context

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

SEQ, NAMES = 12, ("input_ids", "attention_mask")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    calibration = token_inputs(8, SEQ, seed=1)
    return tiny_bert_export_context(tmp_path_factory.mktemp("tflite-rotation"), SEQ, calibration)[0]


def _rotation_blocks(path) -> set[int]:
    """The block sizes of the rotation's float matmuls: fully connected ops with a square float weight (every
    weight of the model's own layers is int8)."""
    from ai_edge_litert import interpreter

    it = interpreter.Interpreter(model_path=str(path))
    blocks = set()
    for op in it._get_ops_details():
        if op["op_name"] != "FULLY_CONNECTED":
            continue
        weight = it._get_tensor_details(op["inputs"][1], 0)
        shape = tuple(int(d) for d in weight["shape"])
        if weight["dtype"] == np.float32 and len(shape) == 2 and shape[0] == shape[1]:
            blocks.add(shape[0])
    return blocks


@pytest.mark.parametrize("block", [None, 16])
def test_rotation_block_sets_the_rotations_matmul_and_the_artifact_agrees(ctx, block):
    from device_bench.runners import load_runner
    from targets import get_target
    from targets.tflite import ROTATION_BLOCK

    target = get_target("tflite-int8")
    ctx.options = target.resolve_options({} if block is None else {"rotation_block": block})
    path = ctx.workdir / f"rotation-{block}.tflite"
    result = target.export(ctx, path)
    expected = min(ROTATION_BLOCK, 64) if block is None else block  # the width (64) caps the default
    assert result.details["rotation_block"] == (ROTATION_BLOCK if block is None else block)
    assert _rotation_blocks(path) == {expected}
    runner = load_runner("tflite", path, threads=1)
    held_out = token_inputs(8, SEQ, seed=5)
    with torch.inference_mode():
        ref = ctx.wrapper(*(torch.from_numpy(held_out[n]) for n in NAMES)).numpy()
    out = np.concatenate([runner.run({n: held_out[n][i:i + 1] for n in NAMES}) for i in range(8)])
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99, cos


def test_a_rotation_block_that_is_not_a_power_of_two_is_refused_by_name():
    from targets import get_target

    with pytest.raises(ValueError, match=r"rotation_block.*48 is not a power of two"):
        get_target("tflite-int8").resolve_options({"rotation_block": 48})
