"""ExecuTorch targets: real export + run through the device_bench runner where executorch is installed."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from targets import get_target

HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None
HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
needs_executorch = pytest.mark.skipif(not HAS_EXECUTORCH,
                                      reason="executorch is not installed (optional: pip install executorch==1.5.1)")
needs_torchao = pytest.mark.skipif(not (HAS_EXECUTORCH and HAS_TORCHAO),
                                   reason="executorch-int8 needs executorch and torchao")


def test_unavailable_is_reported_cleanly():
    for name in ("executorch", "executorch-int8"):
        target = get_target(name)
        assert target.runtime == "executorch" and target.suffix == ".pte"
    assert (get_target("executorch").missing_requirements() == []) == HAS_EXECUTORCH
    assert (get_target("executorch-int8").missing_requirements() == []) == (HAS_EXECUTORCH and HAS_TORCHAO)


def _tiny_context(tmp_path, task: str = "feature-extraction"):
    """A random-init 2-layer BERT (hidden 64) with its fp32 wrapper, as the pack flow would build it."""
    import torch
    import transformers

    from packager.tasks import get_task
    from targets import ExportContext

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64, attn_implementation="eager",
                                     num_labels=3)
    if task == "sequence-classification":
        model = transformers.BertForSequenceClassification(config).eval()

        class Wrapper(torch.nn.Module):
            def forward(self, input_ids, attention_mask):
                return model(input_ids=input_ids.long(), attention_mask=attention_mask.long()).logits
    else:
        model = transformers.BertModel(config).eval()

        class Wrapper(torch.nn.Module):
            def forward(self, input_ids, attention_mask):
                hidden = model(input_ids=input_ids.long(), attention_mask=attention_mask.long()).last_hidden_state
                m = attention_mask.unsqueeze(-1).float()
                return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, (6, 16)).astype(np.int32)
    mask = np.ones((6, 16), np.int32)
    mask[:, 10:] = 0
    calib = {"input_ids": ids, "attention_mask": mask}
    return ExportContext(wrapper=Wrapper().eval(), hf_model=model, task=get_task(task), seq_len=16,
                         input_names=["input_ids", "attention_mask"],
                         example_inputs={k: v[:1] for k, v in calib.items()}, calibration=calib, workdir=tmp_path)


def _run_and_reference(ctx, path):
    """Outputs of the .pte in the device runner and of the fp32 PyTorch wrapper, one sample at a time."""
    import torch

    from device_bench.runners import load_runner

    runner = load_runner("executorch", path, threads=1)
    samples = ctx.calibration_samples()
    out = np.concatenate([runner.run(s) for s in samples])
    with torch.inference_mode():
        ref = np.concatenate([ctx.wrapper(*(torch.from_numpy(s[n]) for n in ctx.input_names)).numpy()
                              for s in samples])
    return out, ref


def _row_cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
@needs_executorch
def test_pte_runs_in_device_runner_and_agrees(tmp_path):
    ctx = _tiny_context(tmp_path)
    path = tmp_path / "m.pte"
    result = get_target("executorch").export(ctx, path)
    assert result.precision == "fp32" and result.details["xnnpack_delegates"] > 0
    out, ref = _run_and_reference(ctx, path)
    assert _row_cosine(out, ref).min() > 0.9999


@pytest.mark.slow
@needs_torchao
def test_int8_pte_is_smaller_runs_and_agrees(tmp_path):
    ctx = _tiny_context(tmp_path)
    fp32_path, int8_path = tmp_path / "fp32.pte", tmp_path / "int8.pte"
    fp32 = get_target("executorch").export(ctx, fp32_path)
    result = get_target("executorch-int8").export(ctx, int8_path)
    assert result.precision == "dynamic-int8"
    assert result.details["quantized_linear_layers"] == 12  # 2 layers x (q, k, v, attn out, ffn in, ffn out)
    assert result.details["xnnpack_delegates"] > 0
    # every quantize/dequantize op is inside the XNNPACK delegates: the same ops stay outside as in fp32
    assert result.details["non_delegated_ops"] == fp32.details["non_delegated_ops"]
    # int8 Linear weights are really stored: 12 x 64x64/64x128 fp32 -> int8 saves ~190 kB of the ~570 kB
    assert int8_path.stat().st_size < 0.8 * fp32_path.stat().st_size
    out, ref = _run_and_reference(ctx, int8_path)
    cos = _row_cosine(out, ref)
    assert cos.mean() >= 0.99 and cos.min() > 0.98
    fp32_out, _ = _run_and_reference(ctx, fp32_path)
    assert np.abs(out - fp32_out).max() > 1e-6  # it is a different (quantized) program, not fp32 again


@pytest.mark.slow
@needs_torchao
def test_int8_classifier_lowers_and_agrees(tmp_path):
    ctx = _tiny_context(tmp_path, "sequence-classification")
    path = tmp_path / "cls.pte"
    result = get_target("executorch-int8").export(ctx, path)
    assert result.details["quantized_linear_layers"] == 14  # the encoder's 12 + pooler + 3-label classifier
    out, ref = _run_and_reference(ctx, path)
    assert out.shape == ref.shape == (6, 3)
    assert float((out * ref).sum() / (np.linalg.norm(out) * np.linalg.norm(ref))) >= 0.99
