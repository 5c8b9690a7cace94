"""The target interface: export an artifact, then verify it by loading and running it.

A target is one class in one module, registered with ``@register``; adding a
target touches only its own file (plus one import line in ``targets/__init__``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from device_bench.runners import Runner, load_runner

if TYPE_CHECKING:  # heavy imports only for type checkers
    import torch


class TargetError(RuntimeError):
    """A target could not be exported; the message is shown to the user as-is."""


@dataclass
class ExportContext:
    """Everything a target needs to export one artifact.

    ``wrapper`` is an eval-mode fp32 ``torch.nn.Module`` whose ``forward``
    takes the inputs of ``input_names`` (int32 tensors of shape [1, seq_len])
    in that order and returns one float tensor (embedding or logits).
    """

    wrapper: "torch.nn.Module"
    hf_model: Any
    task: str
    seq_len: int
    input_names: list[str]
    example_inputs: dict[str, np.ndarray]  # one real tokenized sample, int32 [1, seq_len]
    calibration: dict[str, np.ndarray]  # tokenized calibration texts, int32 [N, seq_len]
    workdir: Path
    options: dict[str, Any] = field(default_factory=dict)

    def example_tensors(self) -> tuple["torch.Tensor", ...]:
        import torch

        return tuple(torch.from_numpy(self.example_inputs[n]) for n in self.input_names)

    def calibration_samples(self, limit: int | None = None) -> list[dict[str, np.ndarray]]:
        n = len(next(iter(self.calibration.values())))
        if limit is not None:
            n = min(n, limit)
        return [{k: v[i : i + 1] for k, v in self.calibration.items()} for i in range(n)]


@dataclass
class ExportResult:
    """What ``export`` produced, beyond the artifact file itself."""

    precision: str
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class Target(ABC):
    name: ClassVar[str]
    runtime: ClassVar[str]  # device_bench runner key
    suffix: ClassVar[str]  # file extension, with the dot
    description: ClassVar[str]
    runtime_requirement: ClassVar[str] = ""
    #: packages the export needs on the host (checked before export)
    requires: ClassVar[tuple[str, ...]] = ()

    def missing_requirements(self) -> list[str]:
        import importlib.util

        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    @abstractmethod
    def export(self, ctx: ExportContext, out_path: Path) -> ExportResult:
        """Write the artifact to ``out_path``; raise ``TargetError`` with a clear reason on failure."""

    def compatibility(self, path: Path, declared_runtime: str | None) -> dict[str, Any] | None:
        """Ops/bytecode of the artifact checked against a declared device runtime (see ``compat``)."""
        from .compat import check_compatibility

        return check_compatibility(self.runtime, path, declared_runtime)

    def load(self, path: Path, threads: int | None = None) -> Runner:
        """Load the artifact with the same runner the device uses."""
        return load_runner(self.runtime, path, threads=threads)


TARGETS: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    if cls.name in TARGETS:
        raise ValueError(f"target {cls.name!r} registered twice")
    TARGETS[cls.name] = cls
    return cls


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]()
    except KeyError:
        raise KeyError(f"unknown target {name!r} (known: {', '.join(sorted(TARGETS))})") from None
