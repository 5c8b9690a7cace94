"""The finetune stage: train the model on the labelled split (the HF Trainer, best validation epoch wins)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Stage, StageContext, StageOutput, register


@dataclass
class FinetuneSpec:
    """Fine-tune with the HF Trainer; the checkpoint with the best validation accuracy wins."""

    epochs: float = 3.0
    lr: float = 5.0e-5
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1


def ran_on(details: dict[str, Any]) -> str:
    """", bf16 on cpu" for a row's description, when the stage trained."""
    return f", {details['precision']} on {details['device']}" if details.get("precision") else ""


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
        from ..compress.finetune import finetune

        model, details = finetune(model, tokenizer, ctx.data, self.spec, seq_len=ctx.seq_len, work_dir=ctx.work_dir,
                                  seed=ctx.seed)
        return StageOutput(model, tokenizer, details)
