"""A tune's search space: the knobs the recipe's stages declare, narrowed or fixed by the recipe's ``search_space``.

``search_space`` maps ``KIND.OPTION`` (``distill.epochs``, ``distill.student.layers``, ``prune.heads``) to
``[low, high]`` (a range), a list (the values of a choice knob), one value (fixed) or null (the stage's own
value, not searched). Knobs it does not name keep the stage's declared range. Only the stages from the first
compressing one on are tuned: those before it make the reference the accuracy budget is measured against.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import RecipeError
from ..stages import STAGES, Knob, Stage
from .buckets import recipe_buckets

#: a search_space value that keeps the stage's own value
KEEP = None
#: the one key that is not a stage's knob: the bucket layouts the exported artifact may take (the recipe's
#: ``buckets``), searched as an optuna choice under BUCKETS_PARAM
BUCKETS_KEY = "buckets"
BUCKETS_PARAM = "pack.buckets"


def encode_buckets(value: Any) -> str:
    """A bucket layout as an optuna choice: "auto", "none" or "16,32,64"."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def decode_buckets(text: str) -> Any:
    """The recipe value of an encoded layout."""
    return text if text in ("auto", "none") else [int(n) for n in text.split(",")]


def bucket_choices(space: Any, seq_len: int) -> list[str] | None:
    """``search_space.buckets``: the layouts a tune chooses among, encoded; None when the recipe's own is kept."""
    value = space.get(BUCKETS_KEY) if isinstance(space, dict) else None
    if value is None:
        return None
    where = f"search_space.{BUCKETS_KEY}"
    if not isinstance(value, list) or not value or all(isinstance(v, int) for v in value):
        raise RecipeError(f"recipe {where}: expected a list of layouts to choose among, e.g. [auto, none, "
                          f"[16, 64]], got {value!r}")
    choices = []
    for i, layout in enumerate(value):
        recipe_buckets(layout, seq_len, f"{where}[{i}]")
        if encode_buckets(layout) in choices:
            raise RecipeError(f"recipe {where}[{i}]: {layout!r} is listed twice")
        choices.append(encode_buckets(layout))
    return choices


@dataclass(frozen=True)
class TunedKnob:
    """One knob of one stage of the recipe: searched within ``knob``'s range, or ``fixed``."""

    stage_index: int
    kind: str
    knob: Knob
    #: True when the recipe fixes the knob (``value`` is then its value; None: the stage's own)
    fixed: bool = False
    value: Any = None

    @property
    def name(self) -> str:
        """The optuna parameter name: unique per stage position and option."""
        return f"{self.stage_index}.{self.kind}.{self.knob.option}"


def first_tuned_stage(stages: list[Stage]) -> int:
    """Index of the first compressing stage (len(stages) when none compresses)."""
    return next((i for i, s in enumerate(stages) if s.compresses), len(stages))


def _narrow(knob: Knob, value: Any, where: str) -> tuple[Knob, bool, Any]:
    """(the knob with the recipe's range, fixed?, fixed value) for one ``search_space`` entry."""
    if value is KEEP:
        return knob, True, None
    if knob.kind == "choice":
        if isinstance(value, list):
            if not value:
                raise RecipeError(f"recipe {where}: at least one value is needed")
            return dataclasses.replace(knob, choices=tuple(value)), False, None
        return knob, True, value
    if isinstance(value, list):
        numbers = len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not numbers or value[0] > value[1]:
            raise RecipeError(f"recipe {where}: expected [low, high], got {value}")
        if knob.kind in ("int", "depth") and not all(isinstance(v, int) for v in value):
            raise RecipeError(f"recipe {where}: expected whole numbers, got {value}")
        if knob.log and value[0] <= 0:
            raise RecipeError(f"recipe {where}: must be above 0 (searched on a log scale), got {value}")
        if knob.kind == "depth" and value[0] < 1:
            raise RecipeError(f"recipe {where}: a student needs at least 1 layer, got {value}")
        return dataclasses.replace(knob, low=value[0], high=value[1]), False, None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(f"recipe {where}: expected [low, high], one number (fixed) or null, got {value!r}")
    return knob, True, value


def check_search_space(space: Any, stages: list[Stage], seq_len: int) -> None:
    """``search_space`` names knobs of the recipe's tuned stages (and bucket layouts), with values of the right
    shape."""
    resolve(space, stages)
    bucket_choices(space, seq_len)


def resolve(space: Any, stages: list[Stage]) -> list[TunedKnob]:
    """Every knob of the tuned stages, in stage order, as the recipe's ``search_space`` narrows it."""
    if not isinstance(space, dict):
        raise RecipeError("recipe search_space: expected a mapping of KIND.OPTION to [low, high], a value or null")
    start = first_tuned_stage(stages)
    tuned_kinds = {s.kind for s in stages[start:]}
    for key in space:
        if key == BUCKETS_KEY:
            continue
        kind, _, option = str(key).partition(".")
        where = f"search_space.{key}"
        if kind not in STAGES:
            raise RecipeError(f"recipe {where}: {kind!r} is not a stage kind (known: {', '.join(STAGES)})")
        knobs = {k.option: k for k in STAGES[kind].search_space}
        if option not in knobs:
            known = ", ".join(knobs) or "none"
            raise RecipeError(f"recipe {where}: {kind} has no knob {option!r} (knobs: {known})")
        if kind not in tuned_kinds:
            raise RecipeError(f"recipe {where}: the recipe tunes no {kind} stage (the stages before the first "
                              "compressing one are the reference and are not tuned)")
        _narrow(knobs[option], space[key], where)
    out: list[TunedKnob] = []
    used: set[str] = set()
    for index in range(start, len(stages)):
        stage = stages[index]
        for knob in stage.search_space:
            if stage.knob_value(knob) is None:  # not one this stage's method or student has
                continue
            key = f"{stage.kind}.{knob.option}"
            if key in space:
                used.add(key)
                narrowed, fixed, value = _narrow(knob, space[key], f"search_space.{key}")
                out.append(TunedKnob(index, stage.kind, narrowed, fixed, value))
            else:
                out.append(TunedKnob(index, stage.kind, knob))
    unused = [k for k in space if k not in used and k != BUCKETS_KEY]
    if unused:
        raise RecipeError(f"recipe search_space.{unused[0]}: no stage of the recipe has that knob with its "
                          "current method or student")
    return out


def describe(knobs: list[TunedKnob]) -> list[str]:
    """One line per knob: 'stage 2 distill.alpha: 0..1' / '... fixed at 3'."""
    lines = []
    for t in knobs:
        what = ("the stage's own value" if t.value is None else f"fixed at {t.value}") if t.fixed else t.knob.describe()
        lines.append(f"stages[{t.stage_index}].{t.kind}.{t.knob.option}: {what}")
    return lines
