"""Multiply-accumulates per inference as a function of the input length: the one formula the bench uses to say
how far an artifact is from the chip (achieved GMAC/s).

An encoder's work at ``L`` tokens is ``per_token * L + per_token_pair * L**2 + fixed``: the projections and the
feed-forward run once per token, attention scores and their weighted sum once per pair of tokens, a pooled head
once. The pack counts the three coefficients on the fp32 model it exports (``packager.compute``) and records them
in the manifest, so this side needs no torch and no model dimensions.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MacsPerLength:
    """``per_token * L + per_token_pair * L**2 + fixed`` multiply-accumulates at ``L`` tokens (manifest minor 3)."""

    per_token: int
    per_token_pair: int
    fixed: int
    how: str = ""

    def at(self, length: float) -> int:
        return int(self.per_token * length + self.per_token_pair * length * length + self.fixed)


def gmac_per_s(macs: int, ms: float | None) -> float | None:
    """Achieved billions of multiply-accumulates per second: ``macs`` done in ``ms`` milliseconds."""
    if ms is None or ms <= 0:
        return None
    return round(macs / (ms * 1e6), 2)
