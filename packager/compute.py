"""Counting an export wrapper's multiply-accumulates per length, for the manifest (``device_bench.compute``)."""
from __future__ import annotations

import numpy as np

from device_bench.compute import MacsPerLength

#: three lengths determine the quadratic exactly; small ones keep the count cheap (three fp32 forward passes)
_LENGTHS = (4, 8, 16)


def count_macs(wrapper, input_names: list[str], seq_len: int) -> MacsPerLength | None:
    """Count the wrapper's matrix-multiply MACs (``torch.utils.flop_counter``: mm, bmm, addmm, attention; two
    FLOPs per MAC) on all-real inputs at three lengths and solve for ``per_token``, ``per_token_pair``, ``fixed``.
    None when the model cannot be counted: the figure is informative, the pack goes on without it."""
    try:
        return _count(wrapper, input_names, seq_len)
    except Exception:  # noqa: BLE001 - any model the counter trips on: no figure rather than no bundle
        return None


def _count(wrapper, input_names: list[str], seq_len: int) -> MacsPerLength:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    lengths = [n for n in _LENGTHS if n <= seq_len] or [seq_len]
    counts = []
    for length in lengths:
        inputs = {"input_ids": torch.full((1, length), 5, dtype=torch.int32),
                  "attention_mask": torch.ones((1, length), dtype=torch.int32)}
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            wrapper(*(inputs[name] for name in input_names))
        counts.append(counter.get_total_flops() // 2)
    if len(lengths) < 3:  # a model shorter than the fit's lengths: all per token
        return MacsPerLength(per_token=int(counts[0] // lengths[0]), per_token_pair=0, fixed=0,
                             how=f"torch flop counter at {lengths[0]} tokens, taken as per token")
    coefficients = np.linalg.solve(np.array([[n, n * n, 1] for n in lengths], dtype=np.float64),
                                   np.array(counts, dtype=np.float64))
    per_token, per_pair, fixed = (int(round(c)) for c in coefficients)
    return MacsPerLength(per_token=per_token, per_token_pair=per_pair, fixed=fixed,
                         how=f"torch flop counter on the fp32 export wrapper at {', '.join(map(str, lengths))} "
                             "tokens (matrix products; 2 FLOPs per MAC)")
