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


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


# -- reading mappings into records ------------------------------------------------
# One walk over a dataclass's annotations builds every typed record of the project from a mapping: the device
# side's documents (strict JSON), a recipe's YAML sections and the command line's option values. A ``Reading``
# says what a value may be converted from; its ``Wording`` says how a mismatch reads to that source's user.

class Wording:
    """How a reading's errors read; this one is the device side's documents' (``manifest.targets[0].name must
    be a string, got an integer``). Every method returns the one-line message."""

    #: an optional field's wrong value: name the whole union ("a string or null"), or the inner type's error
    whole_union: bool = True

    def describe(self, hint: Any) -> str:
        return _describe(hint)

    def field(self, where: str, name: str) -> str:
        return f"{where}.{name}"

    def mismatch(self, where: str, hint: Any, value: Any) -> str:
        return f"{where} must be {self.describe(hint)}, got {_kind(value)}"

    def empty(self, where: str, hint: Any) -> str:
        return self.mismatch(where, hint, None)

    def not_mapping(self, where: str, value: Any) -> str:
        return f"{where} must be an object, got {_kind(value)}"

    def unknown(self, where: str, keys: list[str], known: list[str]) -> str:
        return f"{where}: unknown field(s) {sorted(keys)[:5]}"

    def missing(self, where: str, names: list[str]) -> str:
        return f"{where}: missing field(s) {names}"


@dataclasses.dataclass(frozen=True)
class Reading:
    """What a source's values may be converted from on their way into a record."""

    #: a loose source (YAML): an integer where a number is declared becomes a float, a string such as "5e-5"
    #: (YAML 1.1 reads it so) a float, and an empty (null) section a record of defaults
    lenient: bool = False
    #: command-line text: "true"/"false"/"yes"/"no"/"1"/"0", numbers, and comma-separated lists from strings
    text: bool = False
    wording: Wording = dataclasses.field(default_factory=Wording)


#: the device side's documents: JSON decoded within limits, every field exactly of its declared type
STRICT = Reading()
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def read_value(value: Any, hint: Any, where: str, reading: Reading = STRICT, *, ignore_unknown: bool = False,
               ignored: list[str] | None = None) -> Any:
    """``value`` as the annotation ``hint`` declares it (nested records built); ``RecordError`` in the reading's
    wording on a mismatch."""
    words = reading.wording
    origin = typing.get_origin(hint)
    if hint is Any or isinstance(hint, (str, typing.TypeVar)):
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise RecordError(words.empty(where, hint))
        inner = [a for a in args if a is not type(None)]
        first: RecordError | None = None
        for arg in inner:
            try:
                return read_value(value, arg, where, reading, ignore_unknown=ignore_unknown, ignored=ignored)
            except RecordError as exc:
                first = first or exc
        if len(inner) == 1 and not words.whole_union and first is not None:
            raise first
        raise RecordError(words.mismatch(where, hint, value))
    if hint is type(None):
        if value is None:
            return None
        raise RecordError(words.mismatch(where, hint, value))
    if value is None:
        raise RecordError(words.empty(where, hint))
    if dataclasses.is_dataclass(hint):
        return read_record(hint, value, where, reading, ignore_unknown=ignore_unknown, ignored=ignored)
    if origin is list or hint is list:
        if reading.text and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise RecordError(words.mismatch(where, hint, value))
        (item,) = typing.get_args(hint) or (Any,)
        return [read_value(v, item, f"{where}[{i}]", reading, ignore_unknown=ignore_unknown, ignored=ignored)
                for i, v in enumerate(value)]
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecordError(words.mismatch(where, hint, value))
        return value
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value) or (
                len(args) == 2 and not all(matches(v, args[1]) for v in value.values())):
            raise RecordError(words.mismatch(where, hint, value))
        return dict(value)
    if hint is bool:
        if reading.text and isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            raise RecordError(words.mismatch(where, hint, value))
        return value
    if hint is int:
        if reading.text and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise RecordError(words.mismatch(where, hint, value)) from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordError(words.mismatch(where, hint, value))
        return value
    if hint is float:
        if (reading.text or reading.lenient) and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecordError(words.mismatch(where, hint, value))
        return float(value) if reading.lenient or reading.text else value
    if hint is str:
        if not isinstance(value, str):
            raise RecordError(words.mismatch(where, hint, value))
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise RecordError(words.mismatch(where, hint, value))
    return value  # Literal, Callable, …: not something a document declares


def read_record(cls: type[T], data: Any, where: str, reading: Reading = STRICT, *, ignore_unknown: bool = False,
                ignored: list[str] | None = None) -> T:
    """Build the dataclass ``cls`` (and the records nested in it) from a mapping, reading every field by its
    annotation. ``ignore_unknown``: fields the class does not declare (a newer minor version's) are skipped, at
    every level, and named in ``ignored`` when given."""
    words = reading.wording
    if data is None and reading.lenient:
        data = {}
    if not isinstance(data, dict):
        raise RecordError(words.not_mapping(where, data))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [str(k) for k in data if k not in fields]
    if unknown and not ignore_unknown:
        raise RecordError(words.unknown(where, unknown, list(fields)))
    if ignored is not None:
        ignored.extend(words.field(where, k) for k in sorted(unknown))
    types_ = hints(cls)
    missing = [name for name, f in fields.items() if name not in data and f.init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    kwargs = {}
    for name in fields:
        if name in data:
            kwargs[name] = read_value(data[name], types_.get(name, Any), words.field(where, name), reading,
                                      ignore_unknown=ignore_unknown, ignored=ignored)
        elif name in missing:  # in field order: a recipe's earlier fields are read (and may fail) first
            raise RecordError(words.missing(where, missing))
    return cls(**kwargs)


def from_dict(cls: type[T], data: Any, where: str, *, ignore_unknown: bool = False,
              ignored: list[str] | None = None) -> T:
    """A device-side record from decoded JSON (``read_record`` with the strict reading): every field exactly of its
    declared type, unknown fields refused unless ``ignore_unknown``."""
    return read_record(cls, data, where, STRICT, ignore_unknown=ignore_unknown, ignored=ignored)
