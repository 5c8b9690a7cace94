"""The training options every training stage shares (finetune, distil, movement pruning, prune's recovery),
declared once: their fields, their defaults and their checks. A stage's spec inherits them and may change a
default; the recipe key, its type and its bounds stay the same everywhere."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import RecipeError
from ..records import check_range


@dataclass
class TrainingOptions:
    """The HF Trainer's run: the checkpoint with the best validation accuracy wins."""

    epochs: float = 3.0
    lr: float = 5.0e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    #: fraction of the optimizer steps spent warming the learning rate up
    warmup_ratio: float = 0.1

    def trainer_options(self) -> dict[str, Any]:
        """What ``training.common.training_args`` / ``training.distillation.train_student`` take by name."""
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "weight_decay": self.weight_decay, "warmup_ratio": self.warmup_ratio}


@dataclass
class DistillationOptions(TrainingOptions):
    """A student learning a teacher's softened predictions: ``alpha`` weighs the labels' cross-entropy against
    the teacher's KL at ``temperature``."""

    temperature: float = 2.0
    alpha: float = 0.5


def check_training(spec: Any, where: str) -> None:
    """The training options ``spec`` has (epochs, lr, temperature, batch size, alpha...) within their bounds."""
    for name in ("epochs", "lr", "temperature", "score_lr"):
        if hasattr(spec, name):
            check_range(getattr(spec, name), 0, float("inf"), f"{where}.{name}", low_open=True, high_open=True)
    if hasattr(spec, "batch_size") and spec.batch_size < 1:
        raise RecipeError(f"recipe {where}.batch_size: must be at least 1")
    if hasattr(spec, "weight_decay"):
        check_range(spec.weight_decay, 0.0, float("inf"), f"{where}.weight_decay", high_open=True)
    for name in ("alpha", "warmup_ratio"):
        if hasattr(spec, name):
            check_range(getattr(spec, name), 0.0, 1.0, f"{where}.{name}")
