"""Extra runtimes registered from the environment (``EDGEPACK_EXTRA_RUNNERS``).

The device owner (never an uploaded bundle) can add a runner without editing
the package: ``EDGEPACK_EXTRA_RUNNERS="key=module:Class[,key2=module:Class]"``.
The module must be importable by the worker subprocess (``PYTHONPATH``).
The test suite uses it to inject runners that crash, hang or exhaust memory;
a device could use it for an in-house runtime. Built-in keys cannot be replaced.
"""
from __future__ import annotations

import os
import re
from typing import Mapping

from .runners import RUNNERS

ENV_VAR = "EDGEPACK_EXTRA_RUNNERS"
_BUILTIN = frozenset(RUNNERS)
_ENTRY = re.compile(r"^(?P<key>[A-Za-z0-9_.-]+)=(?P<spec>[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")


class ExtraRunnerError(ValueError):
    """A malformed ``EDGEPACK_EXTRA_RUNNERS`` value."""


def parse_extra_runners(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in filter(None, (part.strip() for part in value.split(","))):
        m = _ENTRY.match(raw)
        if not m:
            raise ExtraRunnerError(f"{ENV_VAR}: {raw!r} is not key=module:Class")
        if m["key"] in _BUILTIN:
            raise ExtraRunnerError(f"{ENV_VAR}: {m['key']!r} is a built-in runtime and cannot be replaced")
        out[m["key"]] = m["spec"]
    return out


def register_extra_runners(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Add the runners named in the environment to ``RUNNERS``; returns their keys."""
    extra = parse_extra_runners(environ.get(ENV_VAR, ""))
    RUNNERS.update(extra)
    return sorted(extra)
