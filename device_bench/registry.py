"""Named units of one kind: targets, stages, tasks, model families, output decoders, runtimes, commands.

Every registry of the project is one of these, so each behaves the same: a name registered twice is an error
at import (not a silent replacement), a missing name's error lists the known ones, and a registry can check the
names another one refers to (a model family's targets, a task's stages). It lives on the device side, the lowest
layer, so the packer and the targets use the same class.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, TypeVar

T = TypeVar("T")

#: a declaration naming every unit of a registry, present and future ("this family supports every stage")
EVERY = ("*",)


def names_all(names: Iterable[str]) -> bool:
    """Whether a declaration names every unit (``EVERY``)."""
    return tuple(names) == EVERY


class RegistryError(ValueError):
    """A unit registered twice, or a reference to a name no unit has; one line naming both."""


class Registry(Dict[str, T]):
    """A dict of named units that refuses duplicates; ``what`` names the kind in its errors ("target")."""

    def __init__(self, what: str, items: Iterable[tuple[str, T]] = ()) -> None:
        super().__init__()
        self.what = what
        for name, item in items:
            self.add(name, item)

    def add(self, name: str, item: T) -> T:
        if name in self:
            raise RegistryError(f"{self.what} {name!r} registered twice")
        self[name] = item
        return item

    def decorator(self, name_of: Callable[[T], str]) -> Callable[[T], T]:
        """A ``@register`` for classes that carry their own name (``name_of(cls)``)."""
        return lambda item: self.add(name_of(item), item)

    def known(self) -> str:
        return ", ".join(sorted(self)) or "none"

    def unknown(self, name: str) -> KeyError:
        """The error for a name no unit has, listing the known ones (raise it)."""
        return KeyError(f"unknown {self.what} {name!r} (known: {self.known()})")

    def check_names(self, names: Iterable[str], where: str) -> None:
        """``where`` (another registry's unit) refers to these names: each must be registered here (``EVERY``
        names them all)."""
        missing = [n for n in names if n not in self and n != EVERY[0]]
        if missing:
            raise RegistryError(f"{where} names unknown {self.what} {missing[0]!r} (known: {self.known()})")
