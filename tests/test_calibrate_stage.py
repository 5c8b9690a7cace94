"""The calibrate stage: one class's logit bias fit on validation labels, folded into the classification head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from packager.labelled_data import LabelledData, LabelledSplit
from packager.stages import StageContext, parse_stage
from packager.stages.calibrate.algorithm import fit_bias, logits_layer, mean_probability
from packager.training.evaluate import predict_logits


def _log_loss(logits: np.ndarray, labels: np.ndarray, column: int, bias: float) -> float:
    shifted = logits.astype(np.float64).copy()
    shifted[:, column] += bias
    shifted -= shifted.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def test_the_fit_matches_the_class_share_and_minimises_the_log_loss():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=400)
    logits = rng.normal(size=(400, 5)) + 3 * np.eye(5)[labels]
    logits[:, 4] -= 2.5  # the model under-predicts class 4
    fit = fit_bias(logits, labels, 4, bound=20.0)
    assert not fit.at_bound and fit.bias > 1
    assert fit.mean_probability < fit.share == pytest.approx((labels == 4).mean())
    assert mean_probability(logits, 4, fit.bias) == pytest.approx(fit.share, abs=1e-9)
    best = _log_loss(logits, labels, 4, fit.bias)
    assert best < _log_loss(logits, labels, 4, 0.0)
    assert all(best <= _log_loss(logits, labels, 4, fit.bias + d) for d in (-0.2, -0.01, 0.01, 0.2))


def test_a_fit_beyond_the_bound_stops_there_and_says_so():
    logits = np.array([[0.0, -50.0], [0.0, -50.0]])
    fit = fit_bias(logits, np.array([0, 1]), 1, bound=5.0)
    assert fit.at_bound and fit.bias == 5.0


def _tiny(kind: str):
    from transformers import BertConfig, BertForSequenceClassification, MPNetConfig, MPNetForSequenceClassification

    torch.manual_seed(0)
    common = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=40, num_labels=3)
    if kind == "mpnet":  # a dense layer of the hidden width before the logits layer
        return MPNetForSequenceClassification(MPNetConfig(**common)).eval()
    return BertForSequenceClassification(BertConfig(**common)).eval()


@pytest.mark.parametrize("kind, name", [("bert", "classifier"), ("mpnet", "classifier.out_proj")])
def test_the_logits_layer_is_the_head_s_last_linear(kind, name):
    model = _tiny(kind)
    assert logits_layer(model) is model.get_submodule(name)


def test_the_stage_shifts_only_the_named_logit_by_the_fitted_bias():
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "green", "blue", "none", "of", "these"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    model = _tiny("bert")
    texts = ["red", "green", "blue", "none of these", "red green", "blue blue", "of these", "green red"]
    split = LabelledSplit(texts, [0, 1, 0, 2, 0, 1, 2, 1])
    data = LabelledData(train=split, validation=split, test=split, labels=["color", "shade", "other"])
    stage = parse_stage({"calibrate": {"label": "other"}}, 0)
    before = predict_logits(model, tokenizer, texts, 8)
    output = stage.run(model, tokenizer, StageContext(data=data, seq_len=8, seed=0, work_dir=None))
    after = predict_logits(output.model, tokenizer, texts, 8)
    bias = output.details["bias"]
    assert output.details["label"] == "other" and output.details["validation_share"] == pytest.approx(0.25)
    assert np.allclose(after[:, :2], before[:, :2], atol=1e-6)
    assert np.allclose(after[:, 2] - before[:, 2], bias, atol=1e-3)
    assert mean_probability(after, 2, 0.0) == pytest.approx(0.25, abs=1e-3)
    assert stage.describe(output.details) == f"calibrate 'other' logit {bias:+.2f} on validation"
