"""torchscript-mobile on a tiny random BERT: the Hadamard rotation of Linear inputs is exact in float, and the
int8 `.ptl` of either rotation runs in the device runner and agrees with the fp32 wrapper."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from device_bench.runners import load_runner  # noqa: E402
from packager.tasks import get_task  # noqa: E402
from targets import ExportContext, get_target  # noqa: E402
from targets.torchscript_mobile import rotate_linear_inputs  # noqa: E402

SEQ = 16
NAMES = ["input_ids", "attention_mask"]


def _inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 1000, (n, SEQ)).astype(np.int32)
    mask = np.zeros((n, SEQ), np.int32)
    for i, k in enumerate(rng.integers(3, SEQ + 1, n)):
        mask[i, :k] = 1
        ids[i, k:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=1000, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=96, max_position_embeddings=64, attn_implementation="eager")
    model = transformers.BertModel(config).eval()
    task = get_task("feature-extraction")
    calib = _inputs(8, seed=1)
    return ExportContext(wrapper=task.make_wrapper(model), hf_model=model, task=task, seq_len=SEQ, input_names=NAMES,
                         example_inputs={k: v[:1] for k, v in calib.items()}, calibration=calib,
                         workdir=tmp_path_factory.mktemp("ptl"))


def _reference(module, inputs) -> np.ndarray:
    with torch.inference_mode():
        return module(*(torch.from_numpy(inputs[n]) for n in NAMES)).numpy()


def test_rotation_is_exact_in_float_and_blocks_follow_the_width(ctx):
    rotated = copy.deepcopy(ctx.wrapper)
    # 2 layers x (q, k, v, attention output, intermediate: width 48 -> blocks of 16; output: 96 -> 32) + the pooler
    assert rotate_linear_inputs(rotated) == 13
    blocks = {m.block for m in rotated.modules() if type(m).__name__ == "RotatedLinear"}
    assert blocks == {16, 32}
    held_out = _inputs(6, seed=4)
    np.testing.assert_allclose(_reference(rotated, held_out), _reference(ctx.wrapper, held_out), atol=1e-5)


@pytest.mark.parametrize("rotation", ["hadamard", "none"])
def test_int8_ptl_of_either_rotation_runs_in_the_device_runner_and_agrees(ctx, rotation):
    target = get_target("torchscript-mobile")
    ctx.options = target.resolve_options({"rotation": rotation})
    path = ctx.workdir / f"{rotation}.ptl"
    result = target.export(ctx, path)
    assert result.precision == "dynamic-int8" and result.details["rotation"] == rotation
    assert (result.details.get("rotated_linears") == 13) == (rotation == "hadamard")
    runner = load_runner("torch-lite", path, threads=1)
    held_out = _inputs(8, seed=5)
    ref = _reference(ctx.wrapper, held_out)
    out = np.concatenate([runner.run({n: held_out[n][i:i + 1] for n in NAMES}) for i in range(8)])
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.99, cos
