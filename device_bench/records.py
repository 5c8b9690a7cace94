"""Typed records from untrusted JSON: bounded decoding and type checks against dataclass hints.

Everything the agent reads from outside (option headers, manifests, its own
job files after a crash, worker output) goes through here, so one place
decides what a well-formed document is: bounded size, bounded nesting, no
integers with thousands of digits, no ``NaN``/``Infinity`` unless asked for,
and every dataclass field of the declared type (``bool`` is not an ``int``,
a name is a ``str``). Decoding never raises anything but ``RecordError``.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

MAX_DEPTH = 32  # nesting of arrays/objects in any document the agent reads
MAX_INT_DIGITS = 30  # far above any count or size, far below Python's 4,300-digit conversion limit


class RecordError(ValueError):
    """A document or record that does not match its schema; one line naming the field."""


def one_line(text: object, limit: int = 300) -> str:
    """``text`` as a single printable line (control characters escaped), at most ``limit`` characters."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise RecordError(f"a number has more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _parse_float(text: str) -> float:
    if len(text) > 64:
        raise RecordError("a number is longer than 64 characters")
    value = float(text)
    if not math.isfinite(value):
        raise RecordError(f"number {text[:20]} is out of range")
    return value


def _reject_constant(name: str) -> float:
    raise RecordError(f"{name} is not allowed (numbers must be finite)")


def load_json(text: str | bytes, *, what: str, max_bytes: int, max_depth: int = MAX_DEPTH,
              allow_nan: bool = False) -> Any:
    """Decode a JSON document within limits; ``RecordError`` naming ``what`` on any problem."""
    if len(text) > max_bytes:
        raise RecordError(f"{what}: {len(text)} bytes, over the limit of {max_bytes}")
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=float if allow_nan else _parse_float,
                           parse_constant=float if allow_nan else _reject_constant)
    except RecordError as exc:
        raise RecordError(f"{what}: {exc}") from None
    except RecursionError:
        raise RecordError(f"{what}: nested deeper than {max_depth} levels") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, bad UTF-8, …
        raise RecordError(f"{what}: not valid JSON ({one_line(exc, 120)})") from None
    if depth(value) > max_depth:
        raise RecordError(f"{what}: nested deeper than {max_depth} levels")
    return value


def depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


# -- type checks against annotations --------------------------------------------

def _describe(hint: Any) -> str:
    if hint is Any:
        return "any value"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}" if typing.get_args(hint) else "a list"
    if origin is dict:
        return "an object"
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list",
            dict: "an object", tuple: "a list"}.get(hint, getattr(hint, "__name__", str(hint)))


def matches(value: Any, hint: Any) -> bool:
    """Whether a decoded value is of the annotated type. Unknown/complex annotations are accepted."""
    if hint is Any or isinstance(hint, (str, typing.TypeVar)):
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(matches(v, args[0]) for v in value))
    if origin is tuple or hint is tuple:
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return isinstance(value, dict) and all(isinstance(k, str) for k in value) and (
            len(args) != 2 or all(matches(v, args[1]) for v in value.values()))
    if dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # Literal, Callable, …: not something a JSON document declares


@functools.lru_cache(maxsize=None)
def hints(cls: type) -> dict[str, Any]:
    """A record class's resolved field annotations (cached: records are checked often, declared once)."""
    return typing.get_type_hints(cls)


def check(record: Any, where: str) -> None:
    """Raise ``RecordError`` unless every field of ``record`` (nested records included) has its annotated type."""
    stack = [(record, where)]
    while stack:
        obj, at = stack.pop()
        types_ = hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            hint = types_.get(f.name, Any)
            if not matches(value, hint):
                raise RecordError(f"{at}.{f.name} must be {_describe(hint)}, got {_kind(value)}")
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                if dataclasses.is_dataclass(item) and not isinstance(item, type):
                    stack.append((item, f"{at}.{f.name}" + (f"[{i}]" if isinstance(value, list) else "")))


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


def _build_value(value: Any, hint: Any, where: str) -> Any:
    """Turn nested JSON objects into the dataclasses the annotation names."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value, where)
        return value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value, where)
    if origin is list and isinstance(value, list):
        (arg,) = typing.get_args(hint) or (Any,)
        return [_build_value(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def from_dict(cls: type[T], data: Any, where: str, *, ignore_unknown: bool = False) -> T:
    """Build the dataclass ``cls`` (and the records nested in it) from decoded JSON, checking every field's type."""
    if not isinstance(data, dict):
        raise RecordError(f"{where} must be an object, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown and not ignore_unknown:
        raise RecordError(f"{where}: unknown field(s) {sorted(map(str, unknown))[:5]}")
    types_ = hints(cls)
    kwargs = {k: _build_value(v, types_.get(k, Any), f"{where}.{k}") for k, v in data.items() if k in fields}
    missing = [name for name, f in fields.items() if name not in kwargs and f.init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecordError(f"{where}: missing field(s) {missing}")
    record = cls(**kwargs)
    check(record, where)
    return record
