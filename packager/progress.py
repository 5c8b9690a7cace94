"""Progress lines and sub-step wall times, reachable from any depth of a run without threading a callback through.

A run (``recipe.run``, a tune) installs its line printer with ``reporting``; a stage row collects the seconds of
the sub-steps run under it with ``timing``; the code doing the work wraps each sub-step (transfer-set labelling,
recovery training, evaluation, latency, export, parity) in ``substep``, which prints a start and an end line and
adds its wall time to the row being measured. Outside a run all of it is silent and free.
"""
from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import Callable, Iterator

Progress = Callable[[str], None]

_EMIT: ContextVar[Progress | None] = ContextVar("edgepack_progress", default=None)
_TIMINGS: ContextVar[dict[str, float] | None] = ContextVar("edgepack_step_seconds", default=None)


@contextlib.contextmanager
def reporting(emit: Progress | None) -> Iterator[None]:
    """Progress lines of everything run inside go to ``emit`` (None: silent)."""
    token = _EMIT.set(emit)
    try:
        yield
    finally:
        _EMIT.reset(token)


def say(message: str) -> None:
    """One progress line (nothing outside ``reporting``)."""
    emit = _EMIT.get()
    if emit is not None:
        emit(message)


@contextlib.contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Lines printed inside are prefixed (``stage 2/3: distill: ``)."""
    outer = _EMIT.get()
    token = _EMIT.set(None if outer is None else (lambda message: outer(f"{prefix}{message}")))
    try:
        yield
    finally:
        _EMIT.reset(token)


@contextlib.contextmanager
def timing() -> Iterator[dict[str, float]]:
    """Collect the wall seconds of the sub-steps run inside (by name, summed when a name repeats)."""
    seconds: dict[str, float] = {}
    token = _TIMINGS.set(seconds)
    try:
        yield seconds
    finally:
        _TIMINGS.reset(token)


@contextlib.contextmanager
def substep(name: str) -> Iterator[None]:
    """A sub-step: a start line, an end line with its wall time (or that it failed), its seconds recorded."""
    say(f"{name} …")
    started = time.perf_counter()
    ok = False
    try:
        yield
        ok = True
    finally:
        seconds = time.perf_counter() - started
        collected = _TIMINGS.get()
        if collected is not None:
            collected[name] = collected.get(name, 0.0) + seconds
        say(f"{name} {'done' if ok else 'failed'} in {seconds:.1f} s")


def rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 2) for name, value in seconds.items()}
