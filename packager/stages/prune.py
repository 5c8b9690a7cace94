"""The prune stage: structured (heads + FFN neurons removed), magnitude or movement (weights zeroed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RecipeError
from ..recipe_schema import check_range, check_training
from .base import Knob, Stage, StageContext, StageOutput, register

PRUNE_METHODS = ("magnitude", "movement", "structured")
#: options that a pruning method ignores, left out when the recipe is shown or stored
IRRELEVANT: dict[str, tuple[str, ...]] = {
    "structured": ("sparsity", "epochs", "lr", "score_lr"),
    "magnitude": ("heads", "ffn", "epochs", "lr", "score_lr", "importance_batches"),
    "movement": ("heads", "ffn", "importance_batches"),
}


@dataclass
class RecoverySpec:
    """Short distillation from the unpruned model after structured pruning."""

    epochs: float = 1.0
    lr: float = 5.0e-5
    batch_size: int = 32
    temperature: float = 2.0
    alpha: float = 0.5


@dataclass
class PruneSpec:
    method: str = "structured"
    #: magnitude / movement: fraction of encoder Linear weights set to zero
    sparsity: float = 0.5
    #: structured: fraction of attention heads / FFN neurons removed
    heads: float = 0.0
    ffn: float = 0.0
    #: movement: fine-tuning epochs during which the scores are learned
    epochs: float = 2.0
    lr: float = 5.0e-5
    score_lr: float = 1.0e-2
    batch_size: int = 32
    #: structured / magnitude: training batches used to score importance (structured only)
    importance_batches: int = 32
    recovery: RecoverySpec | None = field(default_factory=RecoverySpec)


@register
class PruneStage(Stage):
    kind = "prune"
    spec_class = PruneSpec
    order = 30
    summary = "remove attention heads and FFN neurons (structured), or zero weights (magnitude, movement)"
    # a grid: trials that land on the same fractions share the pruned model; ffn >= 0.1 so a trial always prunes
    search_space = (
        Knob("heads", "float", low=0.0, high=0.5, step=0.125, help="fraction of attention heads removed"),
        Knob("ffn", "float", low=0.1, high=0.6, step=0.1, help="fraction of FFN neurons removed"),
    )

    def validate(self, options: dict[str, Any], where: str) -> None:
        super().validate(options, where)
        spec = self.spec
        if spec.method not in PRUNE_METHODS:
            raise RecipeError(f"recipe {where}.method: {spec.method!r} is not one of {', '.join(PRUNE_METHODS)}")
        if spec.method == "structured":
            if "sparsity" in options:
                raise RecipeError(f"recipe {where}.sparsity: structured pruning takes heads and ffn fractions")
            check_range(spec.heads, 0.0, 1.0, f"{where}.heads", high_open=True)
            check_range(spec.ffn, 0.0, 1.0, f"{where}.ffn", high_open=True)
            if spec.heads == 0 and spec.ffn == 0:
                raise RecipeError(f"recipe {where}: structured pruning needs heads > 0 or ffn > 0")
        else:
            for name in ("heads", "ffn"):
                if name in options:
                    raise RecipeError(f"recipe {where}.{name}: only structured pruning removes heads/FFN neurons")
            check_range(spec.sparsity, 0.0, 1.0, f"{where}.sparsity", low_open=True, high_open=True)
        if spec.importance_batches < 1:
            raise RecipeError(f"recipe {where}.importance_batches: must be at least 1")
        if spec.recovery is not None:
            check_training(spec.recovery, f"{where}.recovery")

    def trains(self) -> bool:
        return self.spec.method == "movement" or self.spec.recovery is not None

    def required_splits(self) -> dict[str, str]:
        if self.spec.recovery is None:
            return {}
        return {"validation": "required by the training stages (best checkpoint by validation accuracy)"}

    def knob_value(self, knob: Knob) -> Any:
        return super().knob_value(knob) if self.spec.method == "structured" else None  # heads / ffn: structured only

    def shown_options(self) -> dict[str, Any]:
        options = self.options()
        for key in IRRELEVANT.get(self.spec.method, ()):
            options.pop(key, None)
        return options

    def describe(self, details: dict[str, Any]) -> str:
        spec = self.spec
        recovery = " + recovery" if spec.recovery else ""
        if spec.method == "structured":
            return f"structured: heads −{spec.heads:.0%}, FFN −{spec.ffn:.0%}" + recovery
        return f"{spec.method} {spec.sparsity:.0%} sparsity" + recovery

    def run(self, model: Any, tokenizer: Any, ctx: StageContext) -> StageOutput:
        from ..compress.prune import prune

        model, details = prune(model, tokenizer, ctx.data, self.spec, seq_len=ctx.seq_len, work_dir=ctx.work_dir,
                               seed=ctx.seed)
        return StageOutput(model, tokenizer, details)
