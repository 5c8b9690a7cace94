"""The calibrate stage: shift one class's logit by a bias fit on the validation split (``algorithm``)."""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from ...errors import EdgepackError, RecipeError
from ..base import Stage, StageContext, StageOutput, register
from .spec import CalibrateSpec

if TYPE_CHECKING:
    from ...labelled_data import LabelledData


@register
class CalibrateStage(Stage):
    kind = "calibrate"
    spec_class = CalibrateSpec
    order = 50
    summary = "shift one class's logit (e.g. the out-of-scope class) by a bias fit on the validation split"
    #: one scalar in the head, fit on held-out labels: it does not trade accuracy for size or speed
    compresses = False

    def validate(self, options: dict[str, Any], where: str) -> None:
        if not self.spec.label:
            raise RecipeError(f"recipe {where}.label: must not be empty")
        if not self.spec.bound > 0:
            raise RecipeError(f"recipe {where}.bound: must be positive, got {self.spec.bound!r}")

    def required_splits(self) -> dict[str, str]:
        return {"validation": "calibrate fits its bias on the validation split"}

    def tuning_caveats(self) -> list[str]:
        return ["the bias is fit on the validation split, so the validation accuracy trials are ranked by "
                "flatters it; judge it on the test split"]

    def preflight(self, model: Any, tokenizer: Any, data: "LabelledData", seq_len: int) -> None:
        from .algorithm import logits_layer

        label = self.spec.label
        if label not in data.labels:
            close = difflib.get_close_matches(label, data.labels, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EdgepackError(f"recipe calibrate.label: {label!r} is not one of the data's labels{hint}")
        column = data.labels.index(label)
        if data.validation is not None and column not in data.validation.labels:
            raise EdgepackError(f"recipe calibrate.label: no validation text is labelled {label!r}, so no bias "
                                f"can be fit for it")
        if logits_layer(model) is None:
            raise EdgepackError(f"recipe calibrate: {type(model).__name__} has no linear layer with "
                                f"{model.config.num_labels} outputs and a bias to hold the calibration")

    def describe(self, details: dict[str, Any]) -> str:
        if "bias" not in details:
            return f"calibrate {self.spec.label!r} logit on validation"
        bound = " (at its bound)" if details.get("at_bound") else ""
        return f"calibrate {self.spec.label!r} logit {details['bias']:+.2f}{bound} on validation"

    def run(self, model: Any, tokenizer: Any, ctx: StageContext) -> StageOutput:
        import numpy as np

        from ...training.evaluate import gather_logits
        from .algorithm import add_bias, fit_bias

        self.preflight(model, tokenizer, ctx.data, ctx.seq_len)
        split = ctx.data.validation
        column = ctx.data.labels.index(self.spec.label)
        labels = np.asarray(split.labels)
        ctx.step(f"validation logits ({len(split.texts)} texts)")
        logits = gather_logits(model.eval(), tokenizer, split.texts, ctx.seq_len)
        fit = fit_bias(logits, labels, column, self.spec.bound)
        add_bias(model, column, fit.bias)
        shifted = logits.copy()
        shifted[:, column] += fit.bias
        details = {"label": self.spec.label, "bias": round(fit.bias, 4), "at_bound": fit.at_bound,
                   "validation_share": round(fit.share, 4), "mean_probability_before": round(fit.mean_probability, 4),
                   "validation_accuracy_before": float((logits.argmax(1) == labels).mean()),
                   "validation_accuracy_after": float((shifted.argmax(1) == labels).mean())}
        return StageOutput(model, tokenizer, details)
