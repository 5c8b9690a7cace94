"""The prune stage: structured (heads + FFN neurons removed), magnitude or movement (weights zeroed)."""
from __future__ import annotations

from typing import Any

from ...errors import RecipeError
from ...records import check_range
from ...training.options import check_training
from ..base import Knob, Stage, StageContext, StageOutput, register
from .spec import IRRELEVANT, PRUNE_METHODS, PruneSpec


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
        from .algorithm import prune

        model, details = prune(model, tokenizer, ctx.data, self.spec, seq_len=ctx.seq_len, work_dir=ctx.work_dir,
                               seed=ctx.seed)
        return StageOutput(model, tokenizer, details)
