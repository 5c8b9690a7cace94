"""A recipe stage is one registered class: its options (a spec dataclass), their validation, its one-line
description, the knobs a tune may turn (its search space), and how it runs.

``recipe.spec`` parses ``stages:`` through the registry and ``stages.run.run_stage`` runs what it holds (for a
recipe run and for a tune's trials), so a new stage kind is one package here whose ``stage`` module holds a
``@register``-ed ``Stage`` subclass. Stage modules import torch and the training code lazily (inside ``run``),
so parsing a recipe stays cheap.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, NamedTuple

from device_bench.registry import Registry

from ..errors import RecipeError
from ..records import build, unknown_key
from ..training.options import check_training

if TYPE_CHECKING:  # type names only; nothing of these runs at import time
    from ..labelled_data import LabelledData
    from ..training.evaluate import StageRow

KNOB_KINDS = ("float", "int", "choice", "depth")


@dataclass(frozen=True)
class Knob:
    """One option of a stage that a tune may vary, and the values it may take.

    ``option`` is the option's path in the stage's mapping (``alpha``, ``student.layers``). Kinds: "float" and
    "int" in [low, high] (``log``: sampled on a log scale; ``step``: on a grid), "choice" among ``choices``,
    "depth": a number of encoder layers in [low, high] (``high`` None: one less than the stage's input has),
    spread evenly over the input's layers (``spread_layers``). The default is the stage spec's own value."""

    option: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KNOB_KINDS:
            raise ValueError(f"knob {self.option}: kind {self.kind!r} is not one of {', '.join(KNOB_KINDS)}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"knob {self.option}: a choice knob needs choices")

    @property
    def bounds(self) -> list[float] | None:
        return None if self.low is None else [self.low, self.high]

    def suggest(self, trial: Any, name: str, *, bounds: list[float] | None = None, input_depth: int | None = None) -> Any:
        """Ask an optuna trial for this knob's value, under ``name`` (unique within the study)."""
        low, high = bounds if bounds is not None else (self.low, self.high)
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "depth":
            top = int(high) if high is not None else max(1, (input_depth or 2) - 1)
            return trial.suggest_int(name, int(low), max(int(low), top))
        if self.kind == "int":
            return trial.suggest_int(name, int(low), int(high), log=self.log)
        return trial.suggest_float(name, float(low), float(high), log=self.log, step=self.step)

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "depth":
            top = "(input's − 1)" if self.high is None else f"{self.high:g}"
            return f"{self.low:g}..{top} layers, spread evenly over the input's"
        scale = " (log)" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"{self.low:g}..{self.high:g}{scale}"


def spread_layers(depth: int, input_depth: int) -> list[int]:
    """``depth`` of ``input_depth`` layers, evenly spread from the first (6 -> 3: [0, 2, 4], as DistilBERT)."""
    depth = max(1, min(depth, input_depth))
    return [i * input_depth // depth for i in range(depth)]


def get_option(options: dict[str, Any], path: str) -> Any:
    node: Any = options
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def set_option(options: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = options
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


class StageOutput(NamedTuple):
    model: Any
    tokenizer: Any
    #: what the stage did, for its row (``details['training']`` is moved to the row's ``run``)
    details: dict[str, Any]


@dataclass
class StageContext:
    """What a stage runs with, besides the model and tokenizer it transforms."""

    data: "LabelledData"
    seq_len: int
    seed: int
    #: this stage's scratch folder (checkpoints)
    work_dir: Path
    #: a progress line (already prefixed with the stage's position)
    step: Callable[[str], None] = lambda _message: None
    #: the rows so far (the last one measured the stage's input)
    rows: list["StageRow"] = field(default_factory=list)
    #: in-process results shared between runs of the same input (a tune's trials): keys start with ``input_key``
    memo: dict[Any, Any] | None = None
    #: what identifies the stage's input (a tune's cache key); None: not shared
    input_key: str | None = None


class Stage(ABC):
    """One stage of a recipe: ``spec`` holds its validated options."""

    kind: ClassVar[str]
    spec_class: ClassVar[type]
    #: its place in listings (the usual pipeline order)
    order: ClassVar[int]
    #: one line for help texts and listings
    summary: ClassVar[str]
    #: whether it trades accuracy for size or speed: the accuracy gate's reference is the model before the first one
    compresses: ClassVar[bool] = True
    #: whether it reads ``data.unlabeled`` (the teacher labels those texts)
    uses_unlabeled: ClassVar[bool] = False
    #: the knobs a tune turns (stages before the first compressing one make the reference and are not tuned)
    search_space: ClassVar[tuple[Knob, ...]] = ()
    #: options a tune's trials always set (rows that only explain a stage, searches of their own)
    tune_fixed: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: Any) -> None:
        if not isinstance(spec, self.spec_class):
            raise TypeError(f"{self.kind} stage: expected a {self.spec_class.__name__}, got {type(spec).__name__}")
        self.spec = spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.spec == self.spec  # type: ignore[attr-defined]

    # -- parsing ---------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, options: Any, where: str) -> "Stage":
        """The stage from its recipe mapping; ``RecipeError`` naming the key (``where`` = ``stages[i].kind``)."""
        stage = cls(build(cls.spec_class, options, where))
        stage.validate(options if isinstance(options, dict) else {}, where)
        return stage

    def validate(self, options: dict[str, Any], where: str) -> None:
        """Checks beyond the types; ``options`` is the mapping as written (to tell given keys from defaults)."""
        check_training(self.spec, where)

    def with_options(self, values: dict[str, Any], where: str) -> "Stage":
        """A copy with some options (dotted paths) set, validated as a recipe's would be."""
        options = self.shown_options()
        for path, value in values.items():
            set_option(options, path, value)
        return type(self).parse(options, where)

    # -- what it needs -----------------------------------------------------------------------------------

    def trains(self) -> bool:
        """Whether it trains (and so wants several processes / an accelerator)."""
        return False

    def required_splits(self) -> dict[str, str]:
        """Data splits the stage reads -> why (the recipe error when one is missing)."""
        return {}

    def tuning_caveats(self) -> list[str]:
        """Why the validation accuracy a tune ranks trials by may flatter this stage (one line each)."""
        return []

    def pretrained_source(self) -> tuple[str, str] | None:
        """(folder or Hub id, its recipe key) when the stage swaps in a pretrained model of its own."""
        return None

    def preflight(self, model: Any, tokenizer: Any, data: "LabelledData", seq_len: int) -> None:
        """Fail now, before any training, on a request that cannot work."""

    # -- what it shows -----------------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """Every option, as a recipe mapping (a deep copy)."""
        return copy.deepcopy(dataclasses.asdict(self.spec))

    def shown_options(self) -> dict[str, Any]:
        """The options worth showing and storing (those the chosen method ignores left out)."""
        return self.options()

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: self.shown_options()}

    @abstractmethod
    def describe(self, details: dict[str, Any]) -> str:
        """The stage table's one-line "what" for a run that produced ``details``."""

    # -- running -----------------------------------------------------------------------------------------

    def rows_before(self, previous: "StageRow") -> list["StageRow"]:
        """Rows to show before the stage runs (``previous`` measured its input)."""
        return []

    @abstractmethod
    def run(self, model: Any, tokenizer: Any, ctx: StageContext) -> StageOutput:
        """Transform the model (and tokenizer)."""

    def rows_after(self, model: Any, tokenizer: Any, output: StageOutput, ctx: StageContext) -> list["StageRow"]:
        """Rows that explain the stage's own row (``model``/``tokenizer``: its input); shown before it."""
        return []

    # -- tuning --------------------------------------------------------------------------------------------

    def knob_value(self, knob: Knob) -> Any:
        """The knob's value in this stage's options (a depth for a "depth" knob); None when it has none."""
        value = get_option(self.options(), knob.option)
        if knob.kind == "depth":
            return len(value) if isinstance(value, list) else None
        return value

    def knob_option(self, knob: Knob, value: Any, input_depth: int | None) -> Any:
        """The option value a knob's sampled ``value`` stands for."""
        if knob.kind == "depth":
            return spread_layers(int(value), input_depth or int(value))
        return value


STAGES: Registry[type[Stage]] = Registry("stage")


def register(cls: type[Stage]) -> type[Stage]:
    for knob in cls.search_space:
        if knob.option.split(".")[0] not in {f.name for f in dataclasses.fields(cls.spec_class)}:
            raise ValueError(f"stage {cls.kind}: knob {knob.option!r} is not an option of {cls.spec_class.__name__}")
    return STAGES.add(cls.kind, cls)


def in_range(knob: Knob, value: Any, input_depth: int | None = None) -> bool:
    """Whether ``value`` is one the knob may take (a recipe's own value, replayed as a tune's first trial)."""
    if value is None:
        return False
    if knob.kind == "choice":
        return value in knob.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    high = knob.high if knob.high is not None else max(1, (input_depth or 2) - 1)
    return knob.low <= value <= high


def unknown_stage(kind: str, where: str) -> RecipeError:
    return unknown_key(kind, list(STAGES), where)


def ran_on(details: dict[str, Any]) -> str:
    """", bf16 on cpu" for a training stage's row description, when it trained."""
    return f", {details['precision']} on {details['device']}" if details.get("precision") else ""
