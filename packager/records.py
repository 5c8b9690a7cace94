"""Typed records from a recipe's mappings: a YAML section read into its dataclass, errors naming the key.

The reading is the project's one engine (``device_bench.records.read_record``, which also reads the device side's
documents and the targets' command-line options); this module gives it a recipe's leniency (YAML numbers, an
empty section) and a recipe's wording: every error names the offending key as a path
(``stages[1].distill.temperature``) so a user can fix a 40-line recipe without reading a traceback. Used by the
recipe (``recipe``), the stages' specs (``stages``) and the training options (``training.options``).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar, Union

from device_bench.records import Reading, RecordError, Wording, read_record

from .errors import RecipeError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def unknown_key(key: str, known: list[str], where: str) -> RecipeError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return RecipeError(f"recipe {where}{'.' if where else ''}{key}: unknown key{hint}")


class RecipeWording(Wording):
    """``recipe stages[0].distill.alpha: expected a number, got 'high'``."""

    whole_union = False

    def describe(self, hint: Any) -> str:
        return _type_name(hint)

    def field(self, where: str, name: str) -> str:
        return f"{where}.{name}" if where else name

    def mismatch(self, where: str, hint: Any, value: Any) -> str:
        return f"recipe {where}: expected {self.describe(hint)}, got {value!r}"

    def empty(self, where: str, hint: Any) -> str:
        if typing.get_origin(hint) in (Union, types.UnionType):
            return f"recipe {where}: must not be empty"
        return f"recipe {where}: must not be empty (expected {self.describe(hint)})"

    def not_mapping(self, where: str, value: Any) -> str:
        return f"recipe {where or 'top level'}: expected a mapping, got {value!r}"

    def unknown(self, where: str, keys: list[str], known: list[str]) -> str:
        return str(unknown_key(keys[0], known, where))

    def missing(self, where: str, names: list[str]) -> str:
        return f"recipe {self.field(where, names[0])}: required key is missing"


#: a recipe's YAML: numbers read loosely, a null section is its defaults
RECIPE = Reading(lenient=True, wording=RecipeWording())


def build(cls: type[T], data: Any, where: str) -> T:
    """Instantiate dataclass ``cls`` from a recipe mapping, type-checking each field; ``RecipeError`` naming the
    key."""
    try:
        return read_record(cls, data, where, RECIPE)
    except RecordError as exc:
        raise RecipeError(str(exc)) from None


# -- value checks ----------------------------------------------------------------

def check_range(value: float | None, low: float, high: float, where: str, *, low_open=False, high_open=False) -> None:
    if value is None:
        return
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise RecipeError(f"recipe {where}: {value} is outside {lb}{low}, {high}{hb}")


def additive(default: Any) -> Any:
    """A dataclass field appended to a record after caches were keyed by it: ``record_key`` leaves it out while
    it holds ``default``, so those caches are still found."""
    return dataclasses.field(default=default, metadata={"additive": True})


def record_key(record: Any) -> str:
    """``repr(record)`` without the trailing ``additive`` fields at their defaults, for keys of caches that
    outlive a release.

    A record grows by fields appended at its end whose default changes nothing; a plain ``repr`` would name every
    cache keyed before such a field existed as another one (and a half-hour teacher labelling would run again)."""
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        return repr(record)
    fields = [f for f in dataclasses.fields(record) if f.repr]
    while fields and fields[-1].metadata.get("additive") and getattr(record, fields[-1].name) == fields[-1].default:
        fields.pop()
    inner = ", ".join(f"{f.name}={record_key(getattr(record, f.name))}" for f in fields)
    return f"{type(record).__qualname__}({inner})"
