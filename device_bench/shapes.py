"""Sequence lengths on the device: which padded length a real-length input runs at.

Artifacts accept either static buckets (pad to the smallest bucket that holds
the tokens) or a dynamic range (run at the real length). Bundles written before
manifest minor 1 have neither: one static shape, ``seq_len``. Everything that
decides a padded length (the runners, ``edgepack run``, the bench) goes through
``padded_length`` so they cannot disagree.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .manifest import Shapes, TargetEntry


def accepted_lengths(shapes: "Shapes | None", seq_len: int) -> tuple[list[int], tuple[int, int] | None]:
    """(static buckets ascending, dynamic (min, max) or None) of an artifact."""
    if shapes is None:
        return [seq_len], None
    if shapes.dynamic:
        return [], (int(shapes.dynamic.get("min", 1)), int(shapes.dynamic.get("max", seq_len)))
    return sorted(int(b) for b in shapes.buckets) or [seq_len], None


def choose_length(buckets: list[int], dynamic: tuple[int, int] | None, n_tokens: int) -> int:
    """The length to pad ``n_tokens`` to: the real length when dynamic, else the smallest bucket that holds
    it; longer inputs get the largest length (and are truncated to it)."""
    if dynamic is not None:
        low, high = dynamic
        return max(low, min(int(n_tokens), high))
    for b in buckets:
        if n_tokens <= b:
            return b
    return buckets[-1]


def padded_length(entry: "TargetEntry", seq_len: int, n_tokens: int) -> int:
    """The padded length a target of a bundle runs ``n_tokens`` real tokens at (see ``choose_length``)."""
    buckets, dynamic = accepted_lengths(entry.shapes, seq_len)
    return choose_length(buckets, dynamic, n_tokens)


def real_length(inputs: dict[str, np.ndarray]) -> int:
    """Real tokens in a batch-1, right-padded input: the last position the attention mask keeps, else the width."""
    mask = inputs.get("attention_mask")
    if mask is None:
        return int(next(iter(inputs.values())).shape[-1])
    kept = np.flatnonzero(np.asarray(mask).reshape(-1))
    return int(kept[-1]) + 1 if len(kept) else 1


def fit_to_length(inputs: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """Right-pad with zeros (masked out) or cut each [1, n] input to [1, length]."""
    out = {}
    for name, value in inputs.items():
        value = np.asarray(value)
        n = value.shape[-1]
        if n >= length:
            out[name] = np.ascontiguousarray(value[..., :length])
        else:
            pad = np.zeros(value.shape[:-1] + (length - n,), dtype=value.dtype)
            out[name] = np.concatenate([value, pad], axis=-1)
    return out


def to_input_width(output: np.ndarray, width: int) -> np.ndarray:
    """A per-token output ([1, tokens, …]) of a run at a bucket or real length, cut or zero-padded to the
    inputs' ``width`` so rows of different lengths stack (the padding is masked out wherever it is compared);
    other outputs unchanged."""
    if output.ndim < 3 or output.shape[1] == width:
        return output
    pad = [(0, 0)] * output.ndim
    pad[1] = (0, max(0, width - output.shape[1]))
    return np.pad(output[:, :width], pad)
