"""Runtimes that load and run one artifact.

Each runner lives in its own module and is imported lazily by key, so that the
agent process never imports torch (only the `.ptl` runner subprocess does).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .base import Runner, RunnerUnavailable

# runtime key (as written in the manifest) -> "module:Class"
RUNNERS: dict[str, str] = {
    "tflite": "device_bench.runners.tflite:TFLiteRunner",
    "torch-lite": "device_bench.runners.torch_lite:TorchLiteRunner",
    "onnxruntime": "device_bench.runners.onnx:OnnxRunner",
    "executorch": "device_bench.runners.executorch:ExecuTorchRunner",
}


def runner_class(runtime: str) -> type[Runner]:
    try:
        spec = RUNNERS[runtime]
    except KeyError:
        raise RunnerUnavailable(f"unknown runtime {runtime!r} (known: {', '.join(sorted(RUNNERS))})") from None
    module_name, cls_name = spec.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def load_runner(runtime: str, path: Path | str, threads: int | None = None) -> Runner:
    return runner_class(runtime)(Path(path), threads=threads)


__all__ = ["Runner", "RunnerUnavailable", "RUNNERS", "runner_class", "load_runner"]
