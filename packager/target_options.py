"""``TARGET.KEY=VALUE`` target options: parsed from the command line and resolved against each target's schema.

Its own module: packing, the precision fallback and tune all resolve options, and none of them imports another for it.
"""
from __future__ import annotations

from typing import Any

from .errors import EdgepackError


def resolve_target_options(given: dict[str, dict[str, Any]], targets: list[str]) -> dict[str, dict[str, Any]]:
    """Every packed target's options (defaults filled in), checked before any export starts."""
    from targets import get_target

    for name in given:
        if name not in targets:
            raise EdgepackError(f"--option {name}.…: that target is not being packed")
    resolved = {}
    for name in targets:
        try:
            resolved[name] = get_target(name).resolve_options(given.get(name, {}))
        except ValueError as exc:
            raise EdgepackError(f"--option {exc}") from None
    return resolved


def parse_option_assignments(values: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """``TARGET.KEY=VALUE`` strings → {target: {key: raw value}} (values are typed by the target)."""
    out: dict[str, dict[str, str]] = {}
    for value in values:
        left, sep, raw = value.partition("=")
        target, dot, key = left.strip().rpartition(".")
        if not sep or not dot or not target or not key or not raw.strip():
            raise EdgepackError(f"--option {value!r}: expected TARGET.KEY=VALUE, e.g. tflite-int8-full.io=int8")
        out.setdefault(target, {})[key] = raw.strip()
    return out
