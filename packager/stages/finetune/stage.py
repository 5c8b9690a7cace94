"""The finetune stage: train the model on the labelled split (the HF Trainer, best validation epoch wins)."""
from __future__ import annotations

from typing import Any

from ..base import Stage, StageContext, StageOutput, ran_on, register
from .spec import FinetuneSpec


@register
class FinetuneStage(Stage):
    kind = "finetune"
    spec_class = FinetuneSpec
    order = 10
    summary = "train the model on the labelled split (the best validation epoch wins)"
    #: the fine-tuned model is the reference the accuracy budget is measured against: a tune keeps it fixed
    compresses = False
    search_space = ()

    def trains(self) -> bool:
        return True

    def required_splits(self) -> dict[str, str]:
        return {"validation": "required by the training stages (best checkpoint by validation accuracy)"}

    def describe(self, details: dict[str, Any]) -> str:
        return f"fine-tune {self.spec.epochs:g} ep, lr {self.spec.lr:g}" + ran_on(details)

    def run(self, model: Any, tokenizer: Any, ctx: StageContext) -> StageOutput:
        from .train import finetune

        model, details = finetune(model, tokenizer, ctx.data, self.spec, seq_len=ctx.seq_len, work_dir=ctx.work_dir,
                                  seed=ctx.seed)
        return StageOutput(model, tokenizer, details)
