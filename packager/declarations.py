"""``TARGET=SPEC`` runtime declarations, as `pack --runtime` and `check --runtime` take them.

Its own light module: `edgepack check` parses them on a device without the packing extra.
"""
from __future__ import annotations

from .errors import EdgepackError


def parse_runtime_declarations(values: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """``TARGET=SPEC`` strings (``tflite-int8=tflite-runtime==2.14``) -> [(target, spec), ...] in order."""
    out = []
    for value in values:
        target, sep, spec = value.partition("=")
        if not sep or not target.strip() or not spec.strip():
            raise EdgepackError(f"--runtime {value!r}: expected TARGET=SPEC, e.g. tflite-int8=tflite-runtime==2.14")
        out.append((target.strip(), spec.strip()))
    return out
