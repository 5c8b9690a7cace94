"""The one small interface every runtime implements.

A runner describes itself from the artifact: its entry points (TFLite
signatures, ExecuTorch methods, the ONNX session) with their input and output
names, dtypes and shapes. It takes real-length, batch-1 token ids, picks the
entry point for the smallest static length that holds them (or runs a dynamic
one at the real length), pads only to that, and returns named outputs.
"""
from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..shapes import choose_length, fit_to_length, real_length

if TYPE_CHECKING:
    from ..manifest import InputSpec, Shapes


class RunnerUnavailable(RuntimeError):
    """The runtime needed for an artifact is not installed on this device."""


class ArtifactMismatch(ValueError):
    """The artifact's own inputs/outputs disagree with what the manifest declares."""


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | None]  # None: a dynamic dimension


@dataclass
class EntryPoint:
    """One way into the artifact; ``length`` is its static sequence length, None when dynamic."""

    name: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    length: int | None
    max_length: int | None = None  # upper bound of a dynamic sequence dimension, when the artifact says
    handle: Any = field(default=None, repr=False)  # the runtime's object for it (signature runner, method)


class Runner(ABC):
    """Loads one artifact and runs batch-1 inference on named numpy inputs.

    ``run`` returns the first model output as float32 (dequantized if integer);
    ``run_named`` returns every output by name. ``shapes`` (the manifest's
    entry for this artifact) and ``input_spec`` are optional: without them the
    runner relies on what the artifact says about itself.
    """

    runtime: ClassVar[str]
    #: distributions that provide the runtime, first installed one wins
    distributions: ClassVar[tuple[str, ...]]
    #: whether the runtime's worker threads busy-wait between runs unless ``spin=False`` (onnxruntime's do)
    spins: ClassVar[bool] = False

    def __init__(self, path: Path, threads: int | None = None, *, shapes: "Shapes | None" = None,
                 input_spec: "InputSpec | None" = None, spin: bool = True) -> None:
        """``spin=False``: the runtime's idle worker threads sleep instead of busy-waiting for the next run. An app
        running one model wants them spinning (the next run starts sooner); a probe timing several runners in
        turn does not: beside a 2-thread onnxruntime session's spinning worker, XNNPACK on 2 threads measured
        1.4-3.6 ms per text instead of 1.07-1.33 (AMD Zen 4, 2 cores)."""
        self.path = Path(path)
        self.threads = threads
        self.spin = spin
        self.shapes = shapes
        self.input_spec = input_spec
        self.entry_points: list[EntryPoint] = []

    # -- what subclasses provide ------------------------------------------------
    def _invoke(self, entry: EntryPoint, feed: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``entry`` on inputs in its own order; outputs in its own order, as float32.

        Not abstract: a device owner's runner (``EDGEPACK_EXTRA_RUNNERS``) may override ``run`` instead."""
        raise TypeError(f"runner {type(self).__name__} implements neither _invoke nor run")

    def _describe(self) -> list[EntryPoint]:
        """The artifact's entry points (called once, after the subclass loaded the artifact)."""
        return self.entry_points

    def details(self) -> dict:
        """Runtime-specific facts worth reporting (arena size, delegate…)."""
        return {}

    # -- shared ---------------------------------------------------------------------
    def _finish_load(self) -> None:
        """Describe the artifact and check it against the manifest; subclasses call this at the end of __init__."""
        self.entry_points = self._describe()
        if not self.entry_points:
            raise ArtifactMismatch(f"{self.path.name}: no entry point found in the artifact")
        if self.input_spec is not None:
            expected = [t.name for t in self.input_spec.inputs]
            for entry in self.entry_points:
                if len(entry.inputs) != len(expected):
                    raise ArtifactMismatch(
                        f"{self.path.name}: {entry.name} takes {len(entry.inputs)} inputs "
                        f"({', '.join(i.name for i in entry.inputs)}), the manifest declares {len(expected)} "
                        f"({', '.join(expected)})")
            if self.shapes is not None and self.shapes.buckets and not self.shapes.dynamic:
                have = sorted(e.length for e in self.entry_points if e.length is not None)
                missing = [b for b in self.shapes.buckets if b not in have and not self._accepts_any_length()]
                if missing:
                    raise ArtifactMismatch(f"{self.path.name}: the manifest declares buckets {self.shapes.buckets}, "
                                           f"the artifact has lengths {have}")
        self._static = sorted((e.length, e) for e in self.entry_points if e.length is not None)
        self._dynamic = next((e for e in self.entry_points if e.length is None), None)

    def _accepts_any_length(self) -> bool:
        return any(e.length is None for e in self.entry_points)

    def lengths(self) -> tuple[list[int], tuple[int, int] | None]:
        """(static lengths, dynamic (min, max) or None) this runner accepts."""
        static = [length for length, _ in self._static]
        if self._dynamic is None:
            return static, None
        high = self._dynamic.max_length
        if self.shapes is not None and self.shapes.dynamic:
            high = int(self.shapes.dynamic.get("max", high or 0)) or high
            low = int(self.shapes.dynamic.get("min", 1))
        else:
            low = 1
        if high is None and self.input_spec is not None:
            high = self.input_spec.seq_len
        return static, (low, high or 1 << 30)

    def choose_length(self, n_tokens: int) -> int:
        """The padded length ``n_tokens`` real tokens run at (see ``device_bench.shapes.choose_length``)."""
        static, dynamic = self.lengths()
        if self.shapes is not None and self.shapes.buckets and not self.shapes.dynamic:
            static = sorted(int(b) for b in self.shapes.buckets)
            dynamic = None
        return choose_length(static, dynamic if not static else None, n_tokens)

    def _entry_for(self, length: int) -> EntryPoint:
        for static_length, entry in self._static:
            if static_length == length:
                return entry
        if self._dynamic is not None:
            return self._dynamic
        raise ValueError(f"{self.path.name} has no entry point for length {length} "
                         f"(lengths: {[s for s, _ in self._static]})")

    def _order(self, entry: EntryPoint, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Inputs in the entry point's order: by name when the artifact uses the bundle's names, else by position."""
        names = [i.name for i in entry.inputs]
        if len(inputs) != len(names):
            raise ValueError(f"artifact takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        if all(k in inputs for k in names):
            values = [inputs[k] for k in names]
        else:
            values = list(inputs.values())
        return [np.ascontiguousarray(v, dtype=np.dtype(info.dtype)) if info.dtype else np.ascontiguousarray(v)
                for v, info in zip(values, entry.inputs)]

    def run_named(self, inputs: dict[str, np.ndarray], length: int | None = None) -> dict[str, np.ndarray]:
        """Every output by name. ``inputs`` are [1, n] right-padded or real-length token arrays; they are padded
        (or cut) to ``length``, by default the smallest accepted length holding their real tokens."""
        target = length if length is not None else self.choose_length(real_length(inputs))
        entry = self._entry_for(target)
        outputs = self._invoke(entry, self._order(entry, fit_to_length(inputs, target)))
        names = [o.name for o in entry.outputs]
        if self.input_spec is not None and len(self.input_spec.outputs) == len(outputs):
            names = [o.name for o in self.input_spec.outputs]
        return dict(zip(names, outputs))

    def run(self, inputs: dict[str, np.ndarray], length: int | None = None) -> np.ndarray:
        """The first output (see ``run_named``)."""
        return next(iter(self.run_named(inputs, length).values()))

    def describe(self) -> dict[str, Any]:
        """The entry points as plain data (for reports)."""
        static, dynamic = self.lengths()
        return {"entry_points": [{"name": e.name, "length": e.length,
                                  "inputs": [[i.name, i.dtype, i.shape] for i in e.inputs],
                                  "outputs": [[o.name, o.dtype, o.shape] for o in e.outputs]}
                                 for e in self.entry_points],
                "static_lengths": static, "dynamic": list(dynamic) if dynamic else None}

    @classmethod
    def installed_version(cls) -> str | None:
        for dist in cls.distributions:
            try:
                return f"{dist}=={metadata.version(dist)}"
            except metadata.PackageNotFoundError:
                continue
        return None

    @classmethod
    def require(cls) -> None:
        if cls.installed_version() is None:
            raise RunnerUnavailable(
                f"runtime {cls.runtime!r} needs one of: {', '.join(cls.distributions)} (pip install it on this device)"
            )


def sequence_length(shape: list[int | None]) -> int | None:
    """The static sequence length of a [1, n] input shape, None when that dimension is dynamic."""
    if len(shape) < 2:
        return None
    return shape[-1] if isinstance(shape[-1], int) and shape[-1] > 0 else None
