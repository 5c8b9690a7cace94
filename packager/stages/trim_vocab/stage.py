"""The trim_vocab stage: keep only the vocabulary the data uses (smaller embeddings, same predictions on it)."""
from __future__ import annotations

from typing import Any

from ...errors import RecipeError
from ..base import Knob, Stage, StageContext, StageOutput, register
from .spec import SPLITS, TrimVocabSpec


@register
class TrimVocabStage(Stage):
    kind = "trim_vocab"
    spec_class = TrimVocabSpec
    order = 40
    summary = "keep only the vocabulary the data uses (smaller embedding table)"
    search_space = (
        Knob("keep_top", "choice", choices=(0, 1000, 5000, 10000),
             help="the first N ids of the original vocabulary kept besides the data's own"),
    )

    def validate(self, options: dict[str, Any], where: str) -> None:
        for j, split in enumerate(self.spec.splits):
            if split not in SPLITS:
                raise RecipeError(f"recipe {where}.splits[{j}]: {split!r} is not one of {', '.join(SPLITS)}")
        if not self.spec.splits:
            raise RecipeError(f"recipe {where}.splits: at least one split is needed")
        if self.spec.keep_top < 0:
            raise RecipeError(f"recipe {where}.keep_top: must not be negative")

    def required_splits(self) -> dict[str, str]:
        return {split: "trim_vocab keeps the tokens of this split, but it is not given" for split in self.spec.splits}

    def tuning_caveats(self) -> list[str]:
        if "validation" not in self.spec.splits:
            return []
        return ["splits keeps the validation texts' tokens, so the validation accuracy trials are ranked by cannot "
                "see what trimming costs on unseen words (on CLINC150's test split: up to 1.5 pt); tune with "
                "splits [train] (+ unlabeled) and keep_top as the knob"]

    def describe(self, details: dict[str, Any]) -> str:
        spec = self.spec
        extra = (f" + first {spec.keep_top} ids" if spec.keep_top else "") + (" + ASCII chars" if spec.keep_ascii_chars else "")
        return f"trim vocab to {'+'.join(spec.splits)} tokens{extra}"

    def run(self, model: Any, tokenizer: Any, ctx: StageContext) -> StageOutput:
        from .algorithm import trim_vocab

        texts = [t for split in self.spec.splits
                 for t in (ctx.data.unlabeled if split == "unlabeled" else ctx.data.split(split).texts)]
        return StageOutput(*trim_vocab(model, tokenizer, texts, self.spec))
