"""The prune stage's options: the method, its fractions, movement pruning's training and the recovery
distillation after it, with the checks a recipe's values must pass."""
from __future__ import annotations

from dataclasses import dataclass, field

from ...training.options import DistillationOptions, TrainingOptions

PRUNE_METHODS = ("magnitude", "movement", "structured")


#: options that a pruning method ignores, left out when the recipe is shown or stored
IRRELEVANT: dict[str, tuple[str, ...]] = {
    "structured": ("sparsity", "epochs", "lr", "score_lr", "weight_decay", "warmup_ratio"),
    "magnitude": ("heads", "ffn", "epochs", "lr", "score_lr", "weight_decay", "warmup_ratio", "importance_batches"),
    "movement": ("heads", "ffn", "importance_batches"),
}


@dataclass
class RecoverySpec(DistillationOptions):
    """Short distillation from the unpruned model after structured pruning."""

    epochs: float = 1.0


@dataclass
class PruneSpec(TrainingOptions):
    #: movement: fine-tuning epochs during which the scores are learned
    epochs: float = 2.0
    method: str = "structured"
    #: magnitude / movement: fraction of encoder Linear weights set to zero
    sparsity: float = 0.5
    #: structured: fraction of attention heads / FFN neurons removed
    heads: float = 0.0
    ffn: float = 0.0
    #: movement: the learning rate of the movement scores
    score_lr: float = 1.0e-2
    #: structured / magnitude: training batches used to score importance (structured only)
    importance_batches: int = 32
    recovery: RecoverySpec | None = field(default_factory=RecoverySpec)
