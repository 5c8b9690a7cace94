"""The distill stage's options: the student, the distillation's training options, its search and its augmented
transfer set, with the checks a recipe's values must pass."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import RecipeError
from ...records import additive, check_range
from ...training.options import DistillationOptions
from ..base import Knob

#: the knobs of the student's training: the stage's ``search:`` and a tune both turn these
TRAINING_KNOBS = (
    Knob("alpha", "float", low=0.0, high=1.0, help="weight of the labels' cross-entropy against the teacher's KL"),
    Knob("temperature", "float", low=1.0, high=10.0, help="softmax temperature of the teacher's predictions"),
    Knob("epochs", "int", low=1, high=5, help="training epochs of the student"),
    Knob("lr", "float", low=2.0e-5, high=5.0e-4, log=True, help="the student's learning rate"),
)


#: the sentence-level objective's weight (``sentence_weight``): a tune turns it beside the training knobs
SENTENCE_WEIGHT = Knob("sentence_weight", "float", low=0.0, high=2.0,
                       help="weight of the projected student's pooled vector regressing the teacher's")

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
    """Teacher-labelled variants of the training texts: each copy drops, swaps and replaces some words; each
    splice joins the start of one training text to the end of another.

    Replacement words are drawn from the training texts' own vocabulary; the recipe seed makes it repeatable."""

    copies: int = 4
    #: probability that a word is dropped
    word_dropout: float = 0.1
    #: probability that a word swaps places with its right-hand neighbour
    swap: float = 0.1
    #: probability that a word is replaced by a word of the training data
    replace: float = 0.1
    #: spliced texts per training text: its first words joined to the last words of another training text. They
    #: lie between the labelled ones, where a classifier with an out-of-scope class decides "none of these", so
    #: the student sees the teacher's decisions there too; 0: none
    splice: int = additive(0)
    #: word strings per training text: as many words as it has, drawn from the training words in random order.
    #: Off the data, where the teacher often says "none of these" and a small student agrees with it least; 0: none
    words: int = additive(0)


@dataclass
class DistillSpec(DistillationOptions):
    lr: float = 1.0e-4
    student: StudentSpec = field(default_factory=lambda: StudentSpec(layers=[0, 2, 4]))
    #: weight of the MSE between student hidden states and the matching teacher layers
    hidden_weight: float = 0.0
    #: weight of the MSE between student and teacher attention maps (same head count only)
    attention_weight: float = 0.0
    #: weight of the sentence-level objective (works across tokenizers): the student's mean-pooled vector,
    #: through a learned projection to the teacher's width (dropped at save), regresses the teacher's pooled
    #: vector of the same text, on every transfer-set text (labelled, augmented, data.unlabeled); 0: off
    sentence_weight: float = 0.0
    #: how the projected student vector is compared with the teacher's: "mse" or "cosine" (1 - cosine)
    sentence_loss: str = "mse"
    search: SearchSpec | None = None
    #: teacher-labelled variants of the training texts added to the transfer set
    augment: AugmentSpec | None = None
    #: also train the student on the labels alone (same epochs / lr), a row showing what distillation bought
    student_alone: bool = True


def check_student(student: StudentSpec, where: str) -> None:
    given = [n for n in ("layers", "config", "model") if getattr(student, n) is not None]
    if len(given) != 1:
        raise RecipeError(f"recipe {where}: give exactly one of layers, config, model (got {', '.join(given) or 'none'})")
    if student.layers is not None:
        if not student.layers:
            raise RecipeError(f"recipe {where}.layers: at least one layer is needed")
        if any(l < 0 for l in student.layers) or len(set(student.layers)) != len(student.layers):
            raise RecipeError(f"recipe {where}.layers: expected distinct layer indices >= 0, got {student.layers}")


def check_sentence(spec: "DistillSpec", where: str) -> None:
    from ...training.distillation import SENTENCE_LOSSES

    check_range(spec.sentence_weight, 0, float("inf"), f"{where}.sentence_weight", high_open=True)
    if spec.sentence_loss not in SENTENCE_LOSSES:
        raise RecipeError(f"recipe {where}.sentence_loss: {spec.sentence_loss!r} is not one of "
                          f"{', '.join(SENTENCE_LOSSES)}")


def check_search(s: SearchSpec, where: str) -> None:
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


def check_augment(a: AugmentSpec, where: str) -> None:
    for name in ("splice", "words"):
        if getattr(a, name) < 0:
            raise RecipeError(f"recipe {where}.{name}: must be 0 or more")
    if a.copies < 0 or a.copies == 0 and a.splice == 0 and a.words == 0:
        raise RecipeError(f"recipe {where}.copies: must be at least 1 (or 0 with splice or words)")
    for name in ("word_dropout", "swap", "replace"):
        check_range(getattr(a, name), 0.0, 1.0, f"{where}.{name}", high_open=True)
    if a.copies and a.word_dropout == a.swap == a.replace == 0:
        raise RecipeError(f"recipe {where}: word_dropout, swap and replace are all 0 (copies would be "
                          "the training texts again)")
