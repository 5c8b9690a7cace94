"""Parity against the fp32 model, computed wherever an artifact runs: at pack time on the host, and on the device.

int8 results depend on the kernels that run them (x86 AVX2 vs AVX-512 VNNI, ARM dot product, NPU delegates), so
a bundle carries its parity inputs and their fp32 reference outputs (``parity.npz``, listed in the manifest's
``parity_inputs``): the device recomputes every gate of the pack with its own kernels, torch-free. The metrics and
gates of each task are defined here once; the packer's tasks use the same functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import LengthParity, Manifest, ParityGroup, ParityInputs, TargetEntry, sha256_file
from .shapes import to_input_width

PARITY_NAME = "parity.npz"
#: calibration rows a bundle carries for the device's check (the pack gates on all of them; 64 keep it compact)
MAX_CALIBRATION_ROWS = 64
DEFAULT_LABEL_THRESHOLD = 0.5
#: per task: gate (the pack flag's name) -> the metric it bounds from below
GATES: dict[str, dict[str, str]] = {
    "feature-extraction": {"min_cosine": "mean_cosine"},
    "sequence-classification": {"min_agreement": "top1_agreement"},
    "token-classification": {"min_agreement": "token_agreement"},
    "multi-label-classification": {"min_agreement": "label_agreement"},
}


class ParityDataError(ValueError):
    """The bundle's parity inputs are missing, altered or do not fit the manifest; one line."""


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(denom, 1e-12)


def errors(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean())}


def _agreement(name: str, agree: np.ndarray, reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """A classifier's parity: its decision agreement under ``name``, plus cosine and error of the raw outputs."""
    cos = cosines(reference, candidate)
    return {name: float(agree.mean()), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            **errors(reference, candidate)}


def task_metrics(task: str, reference: np.ndarray, candidate: np.ndarray, attention_mask: np.ndarray | None = None,
                 label_thresholds: list[float] | None = None) -> dict[str, float]:
    """The task's parity metrics of ``candidate`` against ``reference`` (per-token tasks count real tokens only)."""
    if task == "feature-extraction":
        cos = cosines(reference, candidate)
        return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), **errors(reference, candidate)}
    if task == "sequence-classification":
        return _agreement("top1_agreement", np.argmax(reference, axis=1) == np.argmax(candidate, axis=1),
                          reference, candidate)
    if task == "token-classification":
        real = (np.ones(reference.shape[:2], dtype=bool) if attention_mask is None
                else attention_mask[: len(reference)].astype(bool))
        ref, cand = reference[real], candidate[real]  # [real tokens, labels]
        return _agreement("token_agreement", np.argmax(ref, axis=-1) == np.argmax(cand, axis=-1), ref, cand)
    if task == "multi-label-classification":
        limits = np.asarray(label_thresholds or [DEFAULT_LABEL_THRESHOLD] * reference.shape[1])
        return _agreement("label_agreement", (reference >= limits) == (candidate >= limits), reference, candidate)
    raise ParityDataError(f"task {task!r} has no parity metrics here (known: {', '.join(GATES)})")


def shortfalls(task: str, metrics: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    """The gates that failed, readable; empty when the artifact passes."""
    return [f"{metric}={metrics[metric]:.4f} < {thresholds[gate]}" for gate, metric in GATES[task].items()
            if gate in thresholds and metrics[metric] < thresholds[gate]]


def run_rows(runner: Any, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Batch-1 outputs of an artifact through its device runner (each row at its real length or smallest bucket);
    per-token outputs come back zero-padded to the inputs' width, like the reference."""
    names = list(inputs)
    n, width = inputs[names[0]].shape
    return np.concatenate([to_input_width(runner.run({k: inputs[k][i: i + 1] for k in names}), width)
                           for i in range(n)], axis=0)


def length_applies(runner: Any, length: int, dynamic_only: bool) -> bool:
    """Whether a length group is checked on this artifact: a bucket it has, any length for a dynamic one; a spot
    length between buckets only on dynamic artifacts."""
    static, dynamic = runner.lengths()
    if dynamic_only:
        return dynamic is not None
    return dynamic is not None or length in static or runner.choose_length(length) == length


def length_record(task: str, length: int, metrics: dict[str, float], passed: bool, n: int, source: str) -> LengthParity:
    return LengthParity(length=length, n_samples=n, passed=passed, inputs=source,
                        **{k: round(float(v), 6) for k, v in metrics.items()
                           if k in ("mean_cosine", "min_cosine", "top1_agreement")},
                        agreements={k: round(float(v), 6) for k, v in metrics.items() if k.endswith("agreement")})


# -- the bundle's parity inputs ------------------------------------------------------------------------------


def save_parity_inputs(bundle_dir: Path, groups: list[tuple[ParityGroup, dict[str, np.ndarray], np.ndarray]]) -> ParityInputs:
    """Write ``parity.npz`` (each group's inputs and fp32 reference outputs, compressed) and describe it."""
    arrays: dict[str, np.ndarray] = {}
    for i, (group, inputs, reference) in enumerate(groups):
        for name, value in inputs.items():
            arrays[f"g{i}.{name}"] = np.asarray(value, dtype=np.int32)
        arrays[f"g{i}.reference"] = np.asarray(reference, dtype=np.float32)
        group.rows = int(len(reference))
    path = Path(bundle_dir) / PARITY_NAME
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return ParityInputs(file=PARITY_NAME, sha256=sha256_file(path), groups=[g for g, _, _ in groups])


def load_parity_inputs(bundle_dir: Path, manifest: Manifest) -> list[tuple[ParityGroup, dict[str, np.ndarray], np.ndarray]]:
    """The bundle's parity groups with their inputs and reference outputs, after checking the file's sha256."""
    spec = manifest.parity_inputs
    if spec is None:
        raise ParityDataError("the bundle carries no parity inputs (packed before edgepack recorded them: pack it "
                              "again to check parity on the device)")
    path = Path(bundle_dir) / spec.file
    if not path.is_file():
        raise ParityDataError(f"missing {spec.file} (the parity inputs the manifest lists)")
    if sha256_file(path) != spec.sha256:
        raise ParityDataError(f"sha256 mismatch for {spec.file}")
    names = [t.name for t in manifest.input_spec.inputs]
    out = []
    try:
        with np.load(path, allow_pickle=False) as data:
            for i, group in enumerate(spec.groups):
                inputs = {name: data[f"g{i}.{name}"] for name in names}
                out.append((group, inputs, data[f"g{i}.reference"]))
    except (KeyError, ValueError, OSError) as exc:
        raise ParityDataError(f"{spec.file} does not fit the manifest ({exc})") from None
    return out


# -- the device's check ----------------------------------------------------------------------------------------


@dataclass
class DeviceParity:
    """One artifact's parity recomputed on this device's kernels: the pack's gates, overall and per length."""

    passed: bool
    thresholds: dict[str, float] = field(default_factory=dict)
    n_samples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # the calibration rows', as the manifest's parity
    by_length: list[LengthParity] = field(default_factory=list)
    shortfalls: list[str] = field(default_factory=list)
    #: the pack host's figure for the same gate metric, for the side-by-side ("pack 0.9921 → here 0.9893")
    pack_metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def check_artifact(bundle_dir: Path, manifest: Manifest, entry: TargetEntry, runner: Any) -> DeviceParity:
    """Recompute ``entry``'s parity gates with ``runner`` (loaded here, on the device's kernels)."""
    task = manifest.task
    thresholds = dict(entry.parity.thresholds) if entry.parity is not None else {}
    pack_metrics = {metric: getattr(entry.parity, metric) for metric in GATES.get(task, {}).values()
                    if entry.parity is not None and getattr(entry.parity, metric, None) is not None}
    result = DeviceParity(passed=False, thresholds=thresholds, pack_metrics=pack_metrics)
    for group, inputs, reference in load_parity_inputs(bundle_dir, manifest):
        if group.length is not None and not length_applies(runner, group.length, group.dynamic_only):
            continue
        outputs = run_rows(runner, inputs)
        metrics = task_metrics(task, reference, outputs, inputs.get("attention_mask"), manifest.label_thresholds)
        missed = shortfalls(task, metrics, thresholds)
        if group.length is None:
            result.metrics = {k: round(float(v), 6) for k, v in metrics.items()}
            result.n_samples = len(reference)
            result.shortfalls += missed
        else:
            result.by_length.append(length_record(task, group.length, metrics, not missed, len(reference), group.source))
            if group.gates:
                result.shortfalls += [f"length {group.length}: {'; '.join(missed)}"] if missed else []
    result.passed = not result.shortfalls
    return result


def gate_summary(parity: DeviceParity, task: str, short: bool = False) -> str:
    """``mean_cosine 0.9893 (pack 0.9921)``: the gate metric on the calibration rows here and at pack time
    (``short``: without the metric's name, for a table cell)."""
    metric = next(iter(GATES.get(task, {}).values()), None)
    if parity.error is not None:
        return parity.error
    if metric is None or metric not in parity.metrics:
        return "-"
    pack = parity.pack_metrics.get(metric)
    here = f"{parity.metrics[metric]:.4f}" if short else f"{metric} {parity.metrics[metric]:.4f}"
    return here + (f" (pack {pack:.4f})" if pack is not None else "")
