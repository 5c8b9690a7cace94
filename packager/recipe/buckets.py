"""A recipe's bucket layout (``buckets:`` and the search space's ``buckets`` choices), checked in one place."""
from __future__ import annotations

from typing import Any

from ..errors import RecipeError


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
