"""ExecuTorch target: real export + run through the device_bench runner where executorch is installed."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from targets import get_target

HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None


def test_unavailable_is_reported_cleanly():
    target = get_target("executorch")
    assert target.runtime == "executorch" and target.suffix == ".pte"
    assert (target.missing_requirements() == []) == HAS_EXECUTORCH


@pytest.mark.skipif(not HAS_EXECUTORCH, reason="executorch is not installed (optional: pip install executorch==1.5.1)")
def test_pte_runs_in_device_runner_and_agrees(tmp_path):
    import torch
    import transformers

    from device_bench.runners import load_runner
    from targets import ExportContext

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64, attn_implementation="eager")
    model = transformers.BertModel(config).eval()

    class Pool(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            hidden = model(input_ids=input_ids.long(), attention_mask=attention_mask.long()).last_hidden_state
            m = attention_mask.unsqueeze(-1).float()
            return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, (6, 16)).astype(np.int32)
    mask = np.ones((6, 16), np.int32)
    mask[:, 10:] = 0
    calib = {"input_ids": ids, "attention_mask": mask}
    ctx = ExportContext(wrapper=Pool().eval(), hf_model=model, task="feature-extraction", seq_len=16,
                        input_names=["input_ids", "attention_mask"], example_inputs={k: v[:1] for k, v in calib.items()},
                        calibration=calib, workdir=tmp_path)
    path = tmp_path / "m.pte"
    result = get_target("executorch").export(ctx, path)
    assert result.details["xnnpack_delegates"] > 0
    runner = load_runner("executorch", path, threads=1)
    out = np.concatenate([runner.run({k: v[i:i + 1] for k, v in calib.items()}) for i in range(6)])
    with torch.inference_mode():
        ref = ctx.wrapper(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.9999
