"""The recipe stages: one package per stage kind, whose ``stage`` module holds its spec and its ``@register``-ed
``Stage`` (see ``base``) and whose other modules hold its algorithm.

Every stage package is imported here, so a new stage is one new folder. ``run_stage`` runs one stage for the
recipe run and for tune alike. ``STAGES`` lists the kinds in their usual pipeline order (``Stage.order``).
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import (
    STAGES,
    Knob,
    Stage,
    StageContext,
    StageOutput,
    register,
    spread_layers,
    unknown_stage,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.ispkg:
        importlib.import_module(f"{__name__}.{_module.name}.stage")

_ordered = sorted(STAGES.items(), key=lambda item: item[1].order)
STAGES.clear()
STAGES.update(_ordered)


def parse_stage(raw: object, index: int) -> Stage:
    """``stages[index]`` of a recipe (``- kind: {options}`` or ``- kind``) as its registered stage."""
    from ..errors import RecipeError

    where = f"stages[{index}]"
    if isinstance(raw, str):
        raw = {raw: {}}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RecipeError(f"recipe {where}: expected one stage name with its options, e.g. '- finetune: {{epochs: 3}}'")
    (kind, options), = raw.items()
    if kind not in STAGES:
        raise unknown_stage(str(kind), where)
    return STAGES[kind].parse(options, f"{where}.{kind}")


__all__ = ["STAGES", "Knob", "Stage", "StageContext", "StageOutput", "parse_stage", "register", "spread_layers"]
