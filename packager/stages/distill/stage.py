"""The distill stage: a smaller student learns the teacher's softened predictions (``train``; the student in
``student``, the search in ``search``).

Its rows explain it: the teacher's row before the student's, and the same student trained on the labels
alone next to it, so the table shows what distillation bought. Its ``search:`` (optuna over the training
knobs on validation accuracy) reads its ranges from the stage's declared search space.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ...records import check_range
from ..base import Knob, Stage, StageContext, StageOutput, ran_on, register
from .spec import (
    SENTENCE_WEIGHT,
    STUDENT_DEPTH,
    TRAINING_KNOBS,
    DistillSpec,
    check_augment,
    check_search,
    check_sentence,
    check_student,
)

if TYPE_CHECKING:
    from ...labelled_data import LabelledData
    from ...training.evaluate import StageRow

@register
class DistillStage(Stage):
    kind = "distill"
    spec_class = DistillSpec
    order = 20
    summary = "train a smaller student on the teacher's softened predictions (and the labels)"
    uses_unlabeled = True
    search_space = (*TRAINING_KNOBS, SENTENCE_WEIGHT, STUDENT_DEPTH)
    #: a tune compares trials itself: no student-alone row, no search inside a trial
    tune_fixed = {"student_alone": False, "search": None}

    def validate(self, options: dict[str, Any], where: str) -> None:
        super().validate(options, where)
        spec = self.spec
        check_student(spec.student, f"{where}.student")
        check_range(spec.hidden_weight, 0, float("inf"), f"{where}.hidden_weight", high_open=True)
        check_range(spec.attention_weight, 0, float("inf"), f"{where}.attention_weight", high_open=True)
        check_sentence(spec, where)
        if spec.search is not None:
            check_search(spec.search, f"{where}.search")
        if spec.augment is not None:
            check_augment(spec.augment, f"{where}.augment")

    def trains(self) -> bool:
        return True

    def required_splits(self) -> dict[str, str]:
        return {"validation": "required by the training stages (best checkpoint by validation accuracy)"}

    def pretrained_source(self) -> tuple[str, str] | None:
        if self.spec.student.model is None:
            return None
        from .student import student_source

        return student_source(str(self.spec.student.model)), "student.model"

    def preflight(self, model: Any, tokenizer: Any, data: "LabelledData", seq_len: int) -> None:
        from .student import preflight

        preflight(model, tokenizer, self.spec, data.train.texts, seq_len)

    def shown_options(self) -> dict[str, Any]:
        options = self.options()
        options["student"] = {k: v for k, v in options["student"].items() if v is not None}
        return options

    def knob_value(self, knob: Knob) -> Any:
        if knob is STUDENT_DEPTH and self.spec.student.layers is None:
            return None  # a student of its own (a config, a pretrained model): no depth to choose
        return super().knob_value(knob)

    def _student(self) -> str:
        s = self.spec.student
        return f"layers {s.layers}" if s.layers is not None else (f"config {s.config}" if s.config else str(s.model))

    def describe(self, details: dict[str, Any]) -> str:
        student = self._student()
        if str(details.get("student_tokenizer", "")).startswith("its own"):
            student += " (own tokenizer)"
        used = {k: details.get(k, getattr(self.spec, k)) for k in ("temperature", "alpha", "epochs", "lr")}
        text = (f"distil → {student}, T={used['temperature']:.3g}, α={used['alpha']:.2g}, {used['epochs']:g} ep, "
                f"lr {used['lr']:.2g}")
        sentence = details.get("sentence")
        if isinstance(sentence, dict):
            text += f", sentence {sentence['loss']} ×{sentence['weight']:.2g}"
        counts = details.get("transfer_set") or {}
        extra = [f"+{n} {kind}" for kind, n in counts.items() if kind != "train" and n]  # in transfer-set order
        if extra:
            text += f"; {counts['train']} train {' '.join(extra)} teacher-labelled"
        search = details.get("search")
        if isinstance(search, dict):
            text += (f"; search {search['trials']} trials ({search['pruned']} pruned), best val "
                     f"{search['best_val_accuracy'] * 100:.2f}%")
        return text + ran_on(details)

    def describe_alone(self, details: dict[str, Any]) -> str:
        return (f"{self._student()} on the labels alone, {details['epochs']:g} ep, lr {details['lr']:.2g}"
                + ran_on(details))

    def rows_before(self, previous: "StageRow") -> list["StageRow"]:
        return [dataclasses.replace(previous, stage="teacher", seconds=None, details={},
                                    description=f"teacher of the distillation (= {previous.stage} row)")]

    def run(self, model: Any, tokenizer: Any, ctx: StageContext) -> StageOutput:
        from .train import distill

        shared = None if ctx.memo is None or ctx.input_key is None else (ctx.memo, ctx.input_key)
        return StageOutput(*distill(model, tokenizer, ctx.data, self.spec, seq_len=ctx.seq_len, work_dir=ctx.work_dir,
                                    seed=ctx.seed, shared_transfer=shared))

    def rows_after(self, model: Any, tokenizer: Any, output: StageOutput, ctx: StageContext) -> list["StageRow"]:
        """The student trained on the labels alone, with the epochs / lr it was distilled with."""
        if not self.spec.student_alone:
            return []
        import time

        from ...training.evaluate import measure
        from .train import train_alone

        ctx.step("the student on the labels alone (what distillation buys)")
        started = time.perf_counter()
        student, student_tokenizer, details = train_alone(
            model, tokenizer, ctx.data, self.spec, epochs=output.details["epochs"], lr=output.details["lr"],
            seq_len=ctx.seq_len, work_dir=ctx.work_dir / "alone", seed=ctx.seed)
        return [measure("student alone", self.describe_alone(details), student, student_tokenizer, ctx.seq_len,
                        validation=ctx.data.validation, test=ctx.data.test, seconds=time.perf_counter() - started,
                        details=details)]
