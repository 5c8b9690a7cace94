"""The distill stage: a smaller student learns the teacher's softened predictions (see ``compress.distill``).

Its rows explain it: the teacher's row before the student's, and the same student trained on the labels
alone next to it, so the table shows what distillation bought. Its ``search:`` (optuna over the training
knobs on validation accuracy) reads its ranges from the stage's declared search space.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import RecipeError
from ..recipe_schema import check_range
from .base import Knob, Stage, StageContext, StageOutput, register
from .finetune import ran_on

if TYPE_CHECKING:
    from ..compress.evaluate import StageRow
    from ..labelled_data import LabelledData

#: the knobs of the student's training: the stage's ``search:`` and a tune both turn these
TRAINING_KNOBS = (
    Knob("alpha", "float", low=0.0, high=1.0, help="weight of the labels' cross-entropy against the teacher's KL"),
    Knob("temperature", "float", low=1.0, high=10.0, help="softmax temperature of the teacher's predictions"),
    Knob("epochs", "int", low=1, high=5, help="training epochs of the student"),
    Knob("lr", "float", low=2.0e-5, high=5.0e-4, log=True, help="the student's learning rate"),
)
STUDENT_DEPTH = Knob("student.layers", "depth", low=1, help="encoder layers the student keeps of the teacher's")
SEARCH_PRUNERS = ("median", "none")


def _bounds(name: str):
    knob = next(k for k in TRAINING_KNOBS if k.option == name)
    return lambda: list(knob.bounds)


@dataclass
class StudentSpec:
    """Exactly one of: teacher layers to keep, a config override, or a model folder."""

    layers: list[int] | None = None
    config: dict[str, Any] | None = None
    model: str | None = None


@dataclass
class SearchSpec:
    """Hyper-parameter search over alpha, temperature, epochs (and lr when given) on validation (needs optuna).

    The ranges default to the distill stage's declared search space (``TRAINING_KNOBS``)."""

    trials: int = 8
    alpha: list[float] = field(default_factory=_bounds("alpha"))
    temperature: list[float] = field(default_factory=_bounds("temperature"))
    epochs: list[int] = field(default_factory=_bounds("epochs"))
    #: learning-rate range, searched on a log scale; null keeps distill.lr
    lr: list[float] | None = field(default_factory=_bounds("lr"))
    #: "median": stop a trial after an epoch whose validation accuracy is below the median of earlier trials at
    #: that epoch (optuna MedianPruner, after 2 complete trials); "none": run every trial to the end
    pruner: str = "median"
    #: an optuna storage URL (``sqlite:///search.db``, ``postgresql://…``) shared by several workers; with it
    #: ``trials`` is the study's total of completed trials and a worker started later resumes the study
    storage: str | None = None
    #: the study's name in ``storage`` (the same name on every worker)
    study: str | None = None

    def searched(self) -> list[tuple[Knob, list[float]]]:
        """The knobs this search turns, with the recipe's ranges (a range set to null is not searched)."""
        return [(k, getattr(self, k.option)) for k in TRAINING_KNOBS if getattr(self, k.option) is not None]


@dataclass
class AugmentSpec:
    """Teacher-labelled variants of the training texts: each copy drops, swaps and replaces some words.

    Replacement words are drawn from the training texts' own vocabulary; the recipe seed makes it repeatable."""

    copies: int = 4
    #: probability that a word is dropped
    word_dropout: float = 0.1
    #: probability that a word swaps places with its right-hand neighbour
    swap: float = 0.1
    #: probability that a word is replaced by a word of the training data
    replace: float = 0.1


@dataclass
class DistillSpec:
    student: StudentSpec = field(default_factory=lambda: StudentSpec(layers=[0, 2, 4]))
    temperature: float = 2.0
    alpha: float = 0.5
    epochs: float = 3.0
    lr: float = 1.0e-4
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    #: weight of the MSE between student hidden states and the matching teacher layers
    hidden_weight: float = 0.0
    #: weight of the MSE between student and teacher attention maps (same head count only)
    attention_weight: float = 0.0
    search: SearchSpec | None = None
    #: teacher-labelled variants of the training texts added to the transfer set
    augment: AugmentSpec | None = None
    #: also train the student on the labels alone (same epochs / lr), a row showing what distillation bought
    student_alone: bool = True


def _check_student(student: StudentSpec, where: str) -> None:
    given = [n for n in ("layers", "config", "model") if getattr(student, n) is not None]
    if len(given) != 1:
        raise RecipeError(f"recipe {where}: give exactly one of layers, config, model (got {', '.join(given) or 'none'})")
    if student.layers is not None:
        if not student.layers:
            raise RecipeError(f"recipe {where}.layers: at least one layer is needed")
        if any(l < 0 for l in student.layers) or len(set(student.layers)) != len(student.layers):
            raise RecipeError(f"recipe {where}.layers: expected distinct layer indices >= 0, got {student.layers}")


def _check_search(s: SearchSpec, where: str) -> None:
    if s.trials < 1:
        raise RecipeError(f"recipe {where}.trials: must be at least 1")
    for knob in TRAINING_KNOBS:
        bounds = getattr(s, knob.option)
        if bounds is not None and (len(bounds) != 2 or bounds[0] > bounds[1]):
            raise RecipeError(f"recipe {where}.{knob.option}: expected [low, high], got {bounds}")
        if bounds is not None and knob.log and bounds[0] <= 0:
            raise RecipeError(f"recipe {where}.{knob.option}: must be above 0, got {bounds}")
    if s.pruner not in SEARCH_PRUNERS:
        raise RecipeError(f"recipe {where}.pruner: {s.pruner!r} is not one of {', '.join(SEARCH_PRUNERS)}")
    if (s.storage is None) != (s.study is None):
        missing = "study" if s.study is None else "storage"
        raise RecipeError(f"recipe {where}.{missing}: storage and study go together (the workers "
                          "of one search name the same database and study)")
    if s.storage is not None and "://" not in s.storage:
        raise RecipeError(f"recipe {where}.storage: expected a database URL such as "
                          f"sqlite:///search.db, got {s.storage!r}")


def _check_augment(a: AugmentSpec, where: str) -> None:
    if a.copies < 1:
        raise RecipeError(f"recipe {where}.copies: must be at least 1")
    for name in ("word_dropout", "swap", "replace"):
        check_range(getattr(a, name), 0.0, 1.0, f"{where}.{name}", high_open=True)
    if a.word_dropout == a.swap == a.replace == 0:
        raise RecipeError(f"recipe {where}: word_dropout, swap and replace are all 0 (copies would be "
                          "the training texts again)")


@register
class DistillStage(Stage):
    kind = "distill"
    spec_class = DistillSpec
    order = 20
    summary = "train a smaller student on the teacher's softened predictions (and the labels)"
    uses_unlabeled = True
    search_space = (*TRAINING_KNOBS, STUDENT_DEPTH)
    #: a tune compares trials itself: no student-alone row, no search inside a trial
    tune_fixed = {"student_alone": False, "search": None}

    def validate(self, options: dict[str, Any], where: str) -> None:
        super().validate(options, where)
        spec = self.spec
        _check_student(spec.student, f"{where}.student")
        check_range(spec.hidden_weight, 0, float("inf"), f"{where}.hidden_weight", high_open=True)
        check_range(spec.attention_weight, 0, float("inf"), f"{where}.attention_weight", high_open=True)
        if spec.search is not None:
            _check_search(spec.search, f"{where}.search")
        if spec.augment is not None:
            _check_augment(spec.augment, f"{where}.augment")

    def trains(self) -> bool:
        return True

    def required_splits(self) -> dict[str, str]:
        return {"validation": "required by the training stages (best checkpoint by validation accuracy)"}

    def pretrained_source(self) -> tuple[str, str] | None:
        if self.spec.student.model is None:
            return None
        from ..compress.distill import student_source

        return student_source(str(self.spec.student.model)), "student.model"

    def preflight(self, model: Any, tokenizer: Any, data: "LabelledData", seq_len: int) -> None:
        from ..compress.distill import preflight

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
        counts = details.get("transfer_set") or {}
        extra = [f"+{counts[k]} {k}" for k in ("unlabeled", "augmented") if counts.get(k)]
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
        from ..compress.distill import distill

        shared = None if ctx.memo is None or ctx.input_key is None else (ctx.memo, ctx.input_key)
        return StageOutput(*distill(model, tokenizer, ctx.data, self.spec, seq_len=ctx.seq_len, work_dir=ctx.work_dir,
                                    seed=ctx.seed, shared_transfer=shared))

    def rows_after(self, model: Any, tokenizer: Any, output: StageOutput, ctx: StageContext) -> list["StageRow"]:
        """The student trained on the labels alone, with the epochs / lr it was distilled with."""
        if not self.spec.student_alone:
            return []
        import time

        from ..compress.distill import train_alone
        from ..compress.evaluate import measure

        ctx.step("the student on the labels alone (what distillation buys)")
        started = time.perf_counter()
        student, student_tokenizer, details = train_alone(
            model, tokenizer, ctx.data, self.spec, epochs=output.details["epochs"], lr=output.details["lr"],
            seq_len=ctx.seq_len, work_dir=ctx.work_dir / "alone", seed=ctx.seed)
        return [measure("student alone", self.describe_alone(details), student, student_tokenizer, ctx.seq_len,
                        validation=ctx.data.validation, test=ctx.data.test, seconds=time.perf_counter() - started,
                        details=details)]
