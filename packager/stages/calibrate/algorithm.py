"""One class's logit bias, fit on labelled texts, and folded into the classification head.

Why: a small student distilled from a large teacher keeps the teacher's ranking of the in-scope classes but
says "none of these" less often (on CLINC150 the MiniLM student's ``oos`` recall is 9 pt below its MPNet
teacher's at the same in-scope accuracy). One scalar fixes most of that, and the split that chose the best
checkpoint can fit it without touching the test split.

The fit minimises the validation log loss over the bias ``b`` added to class ``c``'s logit. The loss is convex
in ``b`` and its derivative is ``mean(p_c) - share_c``, so the minimum is where the model's mean probability
of ``c`` on the split equals ``c``'s share of the split's labels: a bisection finds it, no learning rate or
grid to choose. The bias goes into the bias of the linear layer that produces the logits, so every target
exported afterwards carries it at no cost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: bisection steps: the bracket shrinks by 2**-60, far below any logit's float32 resolution
STEPS = 60


@dataclass(frozen=True)
class BiasFit:
    bias: float
    #: the class's share of the split's labels, and the model's mean probability of it before the bias
    share: float
    mean_probability: float
    #: whether the fit stopped at ``± bound``
    at_bound: bool


def mean_probability(logits: np.ndarray, column: int, bias: float) -> float:
    shifted = logits.astype(np.float64, copy=True)
    shifted[:, column] += bias
    shifted -= shifted.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return float((weights[:, column] / weights.sum(axis=1)).mean())


def fit_bias(logits: np.ndarray, labels: np.ndarray, column: int, bound: float) -> BiasFit:
    """The log-loss-minimising bias on ``column``'s logit: mean probability of the class equals its share."""
    share = float((labels == column).mean())
    before = mean_probability(logits, column, 0.0)
    low, high = -bound, bound
    if mean_probability(logits, column, high) <= share:
        return BiasFit(high, share, before, True)
    if mean_probability(logits, column, low) >= share:
        return BiasFit(low, share, before, True)
    for _ in range(STEPS):
        middle = (low + high) / 2
        if mean_probability(logits, column, middle) < share:
            low = middle
        else:
            high = middle
    return BiasFit((low + high) / 2, share, before, False)


def logits_layer(model: Any):
    """The linear layer whose outputs are the logits: the last one with ``num_labels`` outputs and a bias
    (BERT's ``classifier``, MPNet's and RoBERTa's ``classifier.out_proj``, ModernBERT's ``classifier``)."""
    import torch

    found = None
    for module in model.modules():
        if (isinstance(module, torch.nn.Linear) and module.out_features == model.config.num_labels
                and module.bias is not None):
            found = module
    return found


def add_bias(model: Any, column: int, bias: float) -> None:
    import torch

    layer = logits_layer(model)
    with torch.no_grad():
        layer.bias[column] += bias
