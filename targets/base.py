"""The target interface: export an artifact, then verify it by loading and running it.

A target is one class in one module, registered with ``@register``; adding a
target touches only its own file (plus one import line in ``targets/__init__``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from device_bench.manifest import Shapes
from device_bench.records import Reading, RecordError, Wording, read_value
from device_bench.registry import Registry
from device_bench.runners import Runner, load_runner

if TYPE_CHECKING:  # heavy imports only for type checkers
    import torch

    from packager.tasks import Task


class _OptionWording(Wording):
    """``tflite-int8.threads: expected int, got 'many'``."""

    whole_union = False

    def describe(self, hint: Any) -> str:
        if hint is bool:
            return "true or false"
        return "a list of strings" if hint == list[str] else getattr(hint, "__name__", str(hint))

    def mismatch(self, where: str, hint: Any, value: Any) -> str:
        return f"{where}: expected {self.describe(hint)}, got {value!r}"


#: a ``--option TARGET.KEY=VALUE`` value: text from the command line, or a recipe's YAML value
OPTION_TEXT = Reading(text=True, wording=_OptionWording())


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
    task: "Task"  # owns the quantization-friendly wrapper, parity metrics and goals; targets never branch on its name
    seq_len: int
    input_names: list[str]
    example_inputs: dict[str, np.ndarray]  # one real tokenized sample, int32 [1, seq_len]
    calibration: dict[str, np.ndarray]  # tokenized calibration texts, int32 [N, seq_len]
    workdir: Path
    options: dict[str, Any] = field(default_factory=dict)  # this target's options, already validated
    output_name: str = "output"  # the task's name for the one output ("embedding", "logits")
    #: static sequence lengths to build (ascending, the last is seq_len); empty: one static shape, seq_len
    buckets: list[int] = field(default_factory=list)
    #: the model's tokenizer, for a target that packs it into the artifact (MediaPipe's metadata)
    tokenizer: Any = None
    #: the texts ``calibration`` was tokenized from (as the task prepares them), for a runner that takes text
    texts: list[str] = field(default_factory=list)

    def example_tensors(self, length: int | None = None) -> tuple["torch.Tensor", ...]:
        """The example inputs, at ``length`` tokens when given (cut, or padded with masked-out zeros)."""
        import torch

        from device_bench.shapes import fit_to_length

        inputs = self.example_inputs if length is None else fit_to_length(self.example_inputs, length)
        return tuple(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.input_names)

    def static_shapes(self, entry_point: str = "seq{}") -> "Shapes":
        """The manifest record for an artifact built at ``buckets`` (one entry point per length)."""
        lengths = self.buckets or [self.seq_len]
        return Shapes(buckets=list(lengths), entry_points={str(n): entry_point.format(n) for n in lengths})

    def calibration_samples(self, limit: int | None = None) -> list[dict[str, np.ndarray]]:
        n = len(next(iter(self.calibration.values())))
        if limit is not None:
            n = min(n, limit)
        return [{k: v[i : i + 1] for k, v in self.calibration.items()} for i in range(n)]


@dataclass(frozen=True)
class TargetOption:
    """One ``--option TARGET.KEY=VALUE`` a target accepts: its type, default and choices."""

    kind: type  # bool, int, float, str, or list (of strings: a YAML list, or one comma-separated string)
    default: Any
    help: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    #: a further check of the parsed value; raises ``ValueError`` with the reason
    check: Callable[[Any], None] | None = None

    def parse(self, raw: Any, where: str) -> Any:
        """The value as ``kind`` (from the command line's text or a recipe's YAML); raises ``ValueError`` naming
        ``where`` when it does not fit."""
        hint = list[str] if self.kind is list else self.kind
        try:
            value = read_value(list(raw) if isinstance(raw, tuple) else raw, hint, where, OPTION_TEXT)
            if self.kind is list and not all(value):
                raise RecordError("an empty string")
        except RecordError as exc:
            if self.kind is list:  # the whole value, not the item that failed
                raise ValueError(f"{where}: expected a list of strings, got {raw!r}") from None
            raise ValueError(str(exc)) from None
        if self.choices and value not in self.choices:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{where}: {value!r} is below the minimum {self.minimum:g}")
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        return value


@dataclass
class ExportResult:
    """What ``export`` produced, beyond the artifact file itself."""

    precision: str
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    shapes: Shapes | None = None  # the sequence lengths the artifact accepts (None: static seq_len)
    #: what this artifact needs on the device when it differs from the target's ``runtime_requirement``
    #: (an option that uses newer operators)
    runtime_requirement: str | None = None


class Target(ABC):
    name: ClassVar[str]
    runtime: ClassVar[str]  # device_bench runner key
    suffix: ClassVar[str]  # file extension, with the dot
    description: ClassVar[str]
    runtime_requirement: ClassVar[str] = ""
    #: packages the export needs on the host (checked before export)
    requires: ClassVar[tuple[str, ...]] = ()
    #: the options ``--option NAME.KEY=VALUE`` may set (see ``resolve_options``)
    options: ClassVar[dict[str, TargetOption]] = {}

    @classmethod
    def refuses_task(cls, task: "type[Task] | Task") -> str | None:
        """Why this target cannot carry ``task``'s output (one line), or None: checked before any export, so
        the family table and ``pack`` refuse the pair up front instead of failing inside the converter."""
        return None

    def resolve_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``given``, each value checked; raises ``ValueError`` naming the bad key."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"{self.name}.{unknown[0]}: unknown option (options of {self.name}: {known})")
        return {key: spec.parse(given[key], f"{self.name}.{key}") if key in given else spec.default
                for key, spec in self.options.items()}

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

    def load(self, path: Path, threads: int | None = None, shapes: Shapes | None = None) -> Runner:
        """Load the artifact with the same runner the device uses."""
        return load_runner(self.runtime, path, threads=threads, shapes=shapes)


TARGETS: Registry[type[Target]] = Registry("target")
register = TARGETS.decorator(lambda cls: cls.name)


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise TARGETS.unknown(name)
    return TARGETS[name]()
