"""Typed recipe sections: a YAML mapping checked against a dataclass, errors naming the key.

Shared by the recipe (``recipe``) and the stages (``stages``): every error names the offending key as a
path (``stages[1].distill.temperature``) so a user can fix a 40-line recipe without reading a traceback.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

from .errors import RecipeError


# -- generic validation ------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; numbers given as ints become floats."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in typing.get_args(tp):
                return None
            raise RecipeError(f"recipe {where}: must not be empty")
        errors = []
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except RecipeError as exc:
                errors.append(exc)
        raise errors[0] if len(args) == 1 else RecipeError(f"recipe {where}: expected {_type_name(tp)}, got {value!r}")
    if value is None:
        raise RecipeError(f"recipe {where}: must not be empty (expected {_type_name(tp)})")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"recipe {where}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"recipe {where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"recipe {where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"recipe {where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 (PyYAML) reads `5e-5` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"recipe {where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"recipe {where}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported annotation {tp!r}")


def unknown_key(key: str, known: list[str], where: str) -> RecipeError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return RecipeError(f"recipe {where}{'.' if where else ''}{key}: unknown key{hint}")


def build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, type-checking each field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {where or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    for key in data:
        if key not in fields:
            raise unknown_key(str(key), list(fields), where)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"recipe {prefix}{name}: required key is missing")
    return cls(**kwargs)


# -- value checks ----------------------------------------------------------------

def check_range(value: float | None, low: float, high: float, where: str, *, low_open=False, high_open=False) -> None:
    if value is None:
        return
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lb, hb = "(" if low_open else "[", ")" if high_open else "]"
        raise RecipeError(f"recipe {where}: {value} is outside {lb}{low}, {high}{hb}")


def check_training(spec: Any, where: str) -> None:
    """The training options a spec has (epochs, lr, temperature, batch size, alpha...) within their bounds."""
    for name in ("epochs", "lr", "temperature", "score_lr"):
        if hasattr(spec, name):
            check_range(getattr(spec, name), 0, float("inf"), f"{where}.{name}", low_open=True, high_open=True)
    if hasattr(spec, "batch_size") and spec.batch_size < 1:
        raise RecipeError(f"recipe {where}.batch_size: must be at least 1")
    for name in ("alpha", "warmup_ratio"):
        if hasattr(spec, name):
            check_range(getattr(spec, name), 0.0, 1.0, f"{where}.{name}")


def recipe_buckets(value: Any, seq_len: int, where: str) -> list[int] | str | None:
    """A recipe's ``buckets`` as ``pack_model`` takes it: "auto" (``pack.AUTO_BUCKETS``), None ("none": one
    static shape) or lengths."""
    if value == "auto":
        return "auto"
    if value == "none":
        return None
    lengths = value if isinstance(value, list) else None
    if not lengths or not all(isinstance(n, int) and not isinstance(n, bool) for n in lengths):
        raise RecipeError(f"recipe {where}: expected auto, none or a list of lengths such as [16, 32, 64], "
                          f"got {value!r}")
    if min(lengths) < 1 or lengths != sorted(set(lengths)):
        raise RecipeError(f"recipe {where}: lengths must be positive, distinct and ascending, got {lengths}")
    if lengths[-1] > seq_len:
        raise RecipeError(f"recipe {where}: {lengths[-1]} is above seq_len {seq_len} (the maximum length)")
    return list(lengths)
