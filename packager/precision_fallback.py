"""Precision fallback: when an int8 artifact misses the accuracy budget, keep its most harmful ops in float.

The target measures, for each group of the ops it quantizes (an encoder layer, the embeddings, the head), the
output error that group adds when it alone is int8 (``targets.fallback.FloatFallback.group_errors``: ONNX
Runtime per group for onnx-int8, ai-edge-quantizer's validation for tflite-int8). ``rank_groups`` orders the
groups worst first; ``run_fallback`` reverts them to float one group at a time (the target's ``float_ops``
option), re-exporting and re-scoring after each, until the accuracy budget holds or nothing is left, and
records which ops were kept in float and the accuracy after each step.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import EdgepackError

#: calibration rows the groups' errors are measured on (enough to rank; each group is one quantize and a run)
RANK_SAMPLES = 16


@dataclass
class FallbackStep:
    """One group reverted to float, and the validation accuracy of the artifact re-exported without it (None
    where only the artifact's checks decide, as in `pack`'s parity fallback)."""

    group: str
    ops: int
    error: float
    accuracy: float | None
    #: the re-exported artifact passed its other checks (the recipe's parity thresholds)
    passed: bool = True


@dataclass
class FallbackResult:
    start_accuracy: float | None
    target_accuracy: float | None
    start_passed: bool = True
    #: every op kept in float (the quantizer's names), in the order they were reverted
    float_ops: list[str] = field(default_factory=list)
    float_groups: list[str] = field(default_factory=list)
    steps: list[FallbackStep] = field(default_factory=list)
    #: the artifact of the last step (what ``score`` returned with its accuracy); None when no step ran
    artifact: Any = None

    @property
    def accuracy(self) -> float | None:
        return self.steps[-1].accuracy if self.steps else self.start_accuracy

    @property
    def met(self) -> bool:
        passed = self.steps[-1].passed if self.steps else self.start_passed
        if self.target_accuracy is None:  # no accuracy budget: the checks alone decide
            return passed
        return passed and self.accuracy is not None and self.accuracy >= self.target_accuracy - 1e-9


def supports_fallback(target: str) -> bool:
    from targets import TARGETS
    from targets.fallback import FloatFallback

    return target in TARGETS and issubclass(TARGETS[target], FloatFallback)


def float_ops_option(target: str, given: dict[str, Any] | None, float_ops: list[str]) -> dict[str, Any]:
    """``given`` (a target's options) with ``float_ops`` added to the ops it already keeps in float."""
    from targets import get_target
    from targets.fallback import FLOAT_OPS, exact_patterns

    options = dict(given or {})
    if float_ops:
        spec = get_target(target).options[FLOAT_OPS]
        own = spec.parse(options[FLOAT_OPS], f"{target}.{FLOAT_OPS}") if FLOAT_OPS in options else []
        options[FLOAT_OPS] = [*own, *exact_patterns(float_ops)]
    return options


def rank_groups(loaded: Any, target: str, seq_len: int, calib_texts: list[str], *, buckets: list[int] | None,
                options: dict[str, Any] | None = None, samples: int = RANK_SAMPLES) -> list[Any]:
    """The target's quantized op groups, worst (largest added output error) first; ops the given ``float_ops``
    already keep in float are left out. ``buckets``: the artifact's (its op names depend on them)."""
    from targets import ExportContext, TargetError, get_target
    from targets.fallback import FLOAT_OPS, FloatFallback

    from .calib import tokenize
    from .native_output import native_output_silenced
    from .target_options import resolve_target_options
    from .tasks import INPUT_NAMES

    spec = get_target(target)
    if not isinstance(spec, FloatFallback):
        raise EdgepackError(f"{target}: has no precision fallback (no ops it can keep in float)")
    resolved = resolve_target_options({target: dict(options or {})}, [target])[target]
    kept = list(resolved.get(FLOAT_OPS) or ())
    task = loaded.task
    calib = tokenize(loaded.tokenizer, task.prepare_texts(calib_texts), seq_len)
    with tempfile.TemporaryDirectory(prefix="edgepack-fallback-") as tmp:
        ctx = ExportContext(wrapper=task.make_wrapper(loaded.model), hf_model=loaded.model, task=task,
                            seq_len=seq_len, input_names=list(INPUT_NAMES),
                            example_inputs={k: v[:1] for k, v in calib.items()}, calibration=calib, workdir=Path(tmp),
                            options=resolved, output_name=task.output_name, buckets=list(buckets or []))
        try:
            with native_output_silenced():
                groups = spec.group_errors(ctx, samples)
        except TargetError as exc:
            raise EdgepackError(f"{target} precision fallback: {exc}") from None
    return rank_group_errors(groups, kept)


def rank_group_errors(groups: list[Any], kept: list[str] | None = None) -> list[Any]:
    """Groups worst (largest added output error) first, without the ops the ``kept`` patterns already keep in
    float (a group left with none is dropped)."""
    from targets.fallback import GroupError

    ranked = []
    for g in groups:
        ops = [op for op in g.ops if not any(re.search(p, op) for p in kept or ())]
        if ops:
            ranked.append(GroupError(g.group, ops, g.error, g.method))
    return sorted(ranked, key=lambda g: -g.error)  # stable: equal errors keep graph order


def run_fallback(ranking: list[Any], score: Callable[[list[str]], tuple[float | None, Any]],
                 start_accuracy: float | None, target_accuracy: float | None, *, start_passed: bool = True,
                 passed: Callable[[Any], bool] | None = None,
                 progress: Callable[[str], None] | None = None) -> FallbackResult:
    """Revert ``ranking``'s groups to float in order until ``score(float ops) -> (accuracy, artifact)`` reaches
    ``target_accuracy`` with an artifact that ``passed`` accepts (default: any), or every group is float.
    ``start_passed``: whether the all-int8 artifact passed. With ``target_accuracy`` None (pack's parity
    fallback) ``passed`` alone decides and accuracies may be None."""
    step = progress or (lambda _message: None)
    accept = passed or (lambda _artifact: True)
    result = FallbackResult(start_accuracy=start_accuracy, target_accuracy=target_accuracy, start_passed=start_passed)
    for group in ranking:
        if result.met:
            break
        result.float_ops.extend(group.ops)
        result.float_groups.append(group.group)
        accuracy, result.artifact = score(list(result.float_ops))
        ok = bool(accept(result.artifact))
        result.steps.append(FallbackStep(group=group.group, ops=len(group.ops), error=group.error,
                                         accuracy=None if accuracy is None else float(accuracy), passed=ok))
        kept = f"{group.group} ({len(group.ops)} ops, output MSE {group.error:.3g}) kept in float: "
        if target_accuracy is None or accuracy is None:
            step(kept + ("checks pass" if ok else "checks still fail"))
        else:
            step(kept + f"accuracy {accuracy * 100:.2f}% (needs {target_accuracy * 100:.2f}%)"
                 + ("" if ok else ", checks still fail"))
    return result
