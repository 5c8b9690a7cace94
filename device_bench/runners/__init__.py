"""Runtimes that load and run one artifact.

Each runner lives in its own module and is imported lazily by key, so that the
agent process never imports torch (only the `.ptl` runner subprocess does).
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING

from ..registry import Registry
from .base import ArtifactMismatch, EntryPoint, Runner, RunnerUnavailable, TensorInfo

if TYPE_CHECKING:
    from ..manifest import InputSpec, Manifest, Shapes

# runtime key (as written in the manifest) -> "module:Class"
RUNNERS: Registry[str] = Registry("runtime", [
    ("tflite", "device_bench.runners.tflite:TFLiteRunner"),
    ("torch-lite", "device_bench.runners.torch_lite:TorchLiteRunner"),
    ("onnxruntime", "device_bench.runners.onnx:OnnxRunner"),
    ("executorch", "device_bench.runners.executorch:ExecuTorchRunner"),
    ("mediapipe", "device_bench.runners.mediapipe:MediaPipeTextRunner"),
])
_BUILTIN = frozenset(RUNNERS)


def runner_class(runtime: str) -> type[Runner]:
    try:
        spec = RUNNERS[runtime]
    except KeyError:
        raise RunnerUnavailable(f"unknown runtime {runtime!r} (known: {', '.join(sorted(RUNNERS))})") from None
    module_name, cls_name = spec.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def load_runner(runtime: str, path: Path | str, threads: int | None = None, *, shapes: "Shapes | None" = None,
                input_spec: "InputSpec | None" = None, spin: bool = True) -> Runner:
    """The runner for ``runtime``; ``shapes``/``input_spec`` (from the manifest) are checked against the artifact."""
    cls = runner_class(runtime)
    if runtime not in _BUILTIN:  # a device owner's runner (EDGEPACK_EXTRA_RUNNERS) may keep an older signature
        for kwargs in ({"shapes": shapes, "input_spec": input_spec, "spin": spin},
                       {"shapes": shapes, "input_spec": input_spec}, {}):
            try:
                inspect.signature(cls).bind(Path(path), threads=threads, **kwargs)
            except TypeError:
                continue
            return cls(Path(path), threads=threads, **kwargs)
    return cls(Path(path), threads=threads, shapes=shapes, input_spec=input_spec, spin=spin)


def load_target(bundle_dir: Path | str, manifest: "Manifest", name: str, threads: int | None = None,
                spin: bool = True) -> Runner:
    """The runner of one target of a bundle, with the manifest's shapes and input spec (``spin``: see Runner)."""
    entry = manifest.target(name)
    return load_runner(entry.runtime, Path(bundle_dir) / str(entry.file), threads, shapes=entry.shapes,
                       input_spec=manifest.input_spec, spin=spin)


__all__ = ["ArtifactMismatch", "EntryPoint", "Runner", "RunnerUnavailable", "RUNNERS", "TensorInfo", "runner_class",
           "load_runner", "load_target"]
