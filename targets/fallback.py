"""Precision fallback of int8 targets: ops kept in float by name, grouped, and the error each group adds.

A quantizing target that supports the fallback mixes in ``FloatFallback``: its ``float_ops`` option (regular
expressions searched in the names of the ops its quantizer quantizes) keeps the matching ops in float, and
``group_errors`` measures, for each group of quantized ops (an encoder layer, the embeddings, the head), the
output error against fp32 when only that group is quantized. ``packager.precision_fallback`` ranks the groups
by that error and reverts the worst first. Op names are the quantizer's own: ONNX node names for onnxruntime,
the op's output tensor names (its "scope") for ai-edge-quantizer.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import TargetError, TargetOption

if TYPE_CHECKING:
    from .base import ExportContext

FLOAT_OPS = "float_ops"


def _check_patterns(patterns: list[str]) -> None:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None


FLOAT_OPS_OPTION = TargetOption(
    list, [], "quantized ops kept in float: regular expressions searched in the op names (comma-separated, or a "
              "list in a recipe); each must match at least one quantized op (the precision fallback of "
              "`edgepack tune` sets it)", check=_check_patterns)

#: a path component that is an item of a module list: "layer.3" (ONNX), "BertLayer_3" (litert-torch)
_INDEXED = re.compile(r"[._](\d+)$")


def op_group(name: str) -> str:
    """The group an op falls back with: ``layer.N`` inside the N-th block of a module list, else ``embeddings``
    or ``head`` (pooler, classifier). Only the module path counts (the op's own name, such as ``MatMul_1``,
    is the last component). litert-torch names a fused op by its locations joined with ';', the producer's
    first (a query projection fused with the previous layer's LayerNorm): the op's own, last path decides."""
    scope = next((part for part in reversed(name.split(";")) if "/" in part), name)
    for component in scope.strip("/").split("/")[:-1]:
        if (match := _INDEXED.search(component)) is not None:
            return f"layer.{int(match.group(1))}"
    return "embeddings" if "embedding" in scope.lower() else "head"


def group_ops(ops: list[str]) -> dict[str, list[str]]:
    """Ops by group, in the order the groups first appear in the graph."""
    groups: dict[str, list[str]] = {}
    for op in ops:
        groups.setdefault(op_group(op), []).append(op)
    return groups


def exact_patterns(ops: list[str]) -> list[str]:
    """``float_ops`` patterns that match exactly these op names."""
    return [f"^{re.escape(op)}$" for op in ops]


def resolve_float_ops(patterns: Any, ops: list[str], target: str) -> list[str]:
    """The quantized ops (in graph order) that any pattern matches; a pattern matching none is an error."""
    patterns = list(patterns or ())
    kept = [op for op in ops if any(re.search(p, op) for p in patterns)]
    for pattern in patterns:
        if not any(re.search(pattern, op) for op in ops):
            example = ops[0] if ops else "none"
            raise TargetError(f"{target}.{FLOAT_OPS}: {pattern!r} matches no quantized op ({len(ops)} ops, such "
                              f"as {example!r})")
    return kept


def output_mse(reference: np.ndarray, output: np.ndarray) -> float:
    return float(np.mean((np.asarray(output, np.float64) - np.asarray(reference, np.float64)) ** 2))


@dataclass
class GroupError:
    """One group of quantized ops and the output error it adds when it alone is quantized."""

    group: str
    ops: list[str]
    #: mean squared error of the output against the fp32 artifact's on the samples
    error: float
    #: how it was measured (shown to the user)
    method: str


class FloatFallback(ABC):
    """A quantizing target whose quantized ops can be kept in float (``float_ops``) one group at a time."""

    @abstractmethod
    def group_errors(self, ctx: "ExportContext", samples: int) -> list[GroupError]:
        """Every group of ops this target quantizes for ``ctx`` with its error, on the first ``samples``
        calibration rows (groups in graph order)."""
