"""torchscript-mobile on a tiny random BERT: the Hadamard rotation of Linear inputs is exact in float, and the
int8 `.ptl` of either rotation runs in the device runner and agrees with the fp32 wrapper."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from conftest import random_token_inputs as token_inputs
from conftest import tiny_bert_export_context

torch = pytest.importorskip("torch")

SEQ, NAMES = 12, ("input_ids", "attention_mask")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """Widths 48 and 96: Hadamard blocks of 16 and 32, not one block per width."""
    calibration = token_inputs(8, SEQ, seed=1)
    return tiny_bert_export_context(tmp_path_factory.mktemp("ptl"), SEQ, calibration, hidden=48, intermediate=96)[0]


def _reference(module, inputs) -> np.ndarray:
    with torch.inference_mode():
        return module(*(torch.from_numpy(inputs[n]) for n in NAMES)).numpy()


def test_rotation_is_exact_in_float_and_blocks_follow_the_width(ctx):
    from targets.torchscript_mobile import rotate_linear_inputs

    rotated = copy.deepcopy(ctx.wrapper)
    # 2 layers x (q, k, v, attention output, intermediate: width 48 -> blocks of 16; output: 96 -> 32) + the pooler
    assert rotate_linear_inputs(rotated) == 13
    blocks = {m.block for m in rotated.modules() if type(m).__name__ == "RotatedLinear"}
    assert blocks == {16, 32}
    held_out = token_inputs(6, SEQ, seed=4)
    np.testing.assert_allclose(_reference(rotated, held_out), _reference(ctx.wrapper, held_out), atol=1e-5)


@pytest.mark.parametrize("rotation", ["hadamard", "none"])
def test_int8_ptl_of_either_rotation_runs_in_the_device_runner_and_agrees(ctx, rotation):
    from device_bench.runners import load_runner
    from targets import get_target

    target = get_target("torchscript-mobile")
    ctx.options = target.resolve_options({"rotation": rotation})
    path = ctx.workdir / f"{rotation}.ptl"
    result = target.export(ctx, path)
    assert result.precision == "dynamic-int8" and result.details["rotation"] == rotation
    assert (result.details.get("rotated_linears") == 13) == (rotation == "hadamard")
    runner = load_runner("torch-lite", path, threads=1)
    held_out = token_inputs(8, SEQ, seed=5)
    ref = _reference(ctx.wrapper, held_out)
    out = np.concatenate([runner.run({n: held_out[n][i:i + 1] for n in NAMES}) for i in range(8)])
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99, cos
