"""Tasks: what the exported graph computes and how its outputs are compared.

Each task is one class: the HF auto class it loads with, the export wrapper
(int32 ``input_ids``/``attention_mask`` of static shape → one float tensor),
and the parity metrics that matter for its output.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

INPUT_NAMES = ["input_ids", "attention_mask"]


class Task(ABC):
    name: ClassVar[str]
    output_name: ClassVar[str]
    auto_class: ClassVar[str]  # attribute of ``transformers``
    pooling: ClassVar[str | None] = None
    normalize: ClassVar[bool] = False

    @abstractmethod
    def make_wrapper(self, model: nn.Module) -> nn.Module:
        """An export-friendly module: forward(input_ids:int32, attention_mask:int32) -> Tensor."""

    @abstractmethod
    def parity(self, reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
        """Compare [N, D] outputs of the artifact with the fp32 reference."""

    #: threshold name -> the parity metric it bounds from below
    gates: ClassVar[dict[str, str]]

    @abstractmethod
    def thresholds(self, min_cosine: float, min_agreement: float) -> dict[str, float]: ...

    def shortfalls(self, metrics: dict[str, float], thresholds: dict[str, float]) -> list[str]:
        """Human-readable gates that failed; empty when the artifact passes."""
        return [f"{metric}={metrics[metric]:.4f} < {thresholds[gate]}" for gate, metric in self.gates.items()
                if metrics[metric] < thresholds[gate]]

    def predictions(self, outputs: np.ndarray) -> np.ndarray | None:
        """Class predictions for task accuracy, or None when the task has no labels."""
        return None

    def output_dim(self, model: nn.Module) -> int:
        return int(model.config.hidden_size)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(denom, 1e-12)


def _errors(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean())}


class _MeanPooledEncoder(nn.Module):
    """Sentence embedding: masked mean of the last hidden state, L2-normalised."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids.long(), attention_mask=attention_mask.long()).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(summed / counts, p=2.0, dim=-1)


class _Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids.long(), attention_mask=attention_mask.long()).logits


class FeatureExtraction(Task):
    name = "feature-extraction"
    output_name = "embedding"
    auto_class = "AutoModel"
    pooling = "mean"
    normalize = True

    def make_wrapper(self, model: nn.Module) -> nn.Module:
        return _MeanPooledEncoder(model).eval()

    def parity(self, reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
        cos = _cosines(reference, candidate)
        return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), **_errors(reference, candidate)}

    gates = {"min_cosine": "mean_cosine"}

    def thresholds(self, min_cosine: float, min_agreement: float) -> dict[str, float]:
        return {"min_cosine": min_cosine}


class SequenceClassification(Task):
    name = "sequence-classification"
    output_name = "logits"
    auto_class = "AutoModelForSequenceClassification"

    def make_wrapper(self, model: nn.Module) -> nn.Module:
        return _Logits(model).eval()

    def output_dim(self, model: nn.Module) -> int:
        return int(model.config.num_labels)

    def parity(self, reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
        agree = np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)
        cos = _cosines(reference, candidate)
        return {"top1_agreement": float(agree.mean()), "mean_cosine": float(cos.mean()),
                "min_cosine": float(cos.min()), **_errors(reference, candidate)}

    gates = {"min_agreement": "top1_agreement"}

    def thresholds(self, min_cosine: float, min_agreement: float) -> dict[str, float]:
        return {"min_agreement": min_agreement}

    def predictions(self, outputs: np.ndarray) -> np.ndarray | None:
        return np.argmax(outputs, axis=1)


TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (FeatureExtraction, SequenceClassification)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]()
    except KeyError:
        raise KeyError(f"unknown task {name!r} (known: {', '.join(TASKS)})") from None


def task_names() -> list[str]:
    return list(TASKS)


def describe(task: Task) -> dict[str, Any]:
    return {"name": task.name, "output": task.output_name, "pooling": task.pooling, "normalize": task.normalize}
