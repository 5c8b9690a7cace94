"""LiteRT (TFLite) runner: ai-edge-litert, or the legacy tflite-runtime as a fallback."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Runner, RunnerUnavailable


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore

        return Interpreter
    except ImportError:
        raise RunnerUnavailable("runtime 'tflite' needs ai-edge-litert (pip install ai-edge-litert)") from None


class TFLiteRunner(Runner):
    runtime = "tflite"
    distributions = ("ai-edge-litert", "tflite-runtime")

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(path, threads)
        interpreter_cls = _interpreter_class()
        self.interpreter = interpreter_cls(model_path=str(self.path), num_threads=threads or None)
        self.interpreter.allocate_tensors()
        self._inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self._output = self.interpreter.get_output_details()[0]

    def _input_detail(self, name: str) -> dict:
        if name in self._inputs:
            return self._inputs[name]
        # converters prefix/suffix names ("serving_default_input_ids:0", "args_0"…)
        for key, detail in self._inputs.items():
            if name in key:
                return detail
        if len(self._inputs) == 1:
            return next(iter(self._inputs.values()))
        raise KeyError(f"artifact has no input named {name!r} (has {sorted(self._inputs)})")

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        for name, value in inputs.items():
            detail = self._input_detail(name)
            self.interpreter.set_tensor(detail["index"], _quantize_input(value, detail))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"])
        return _dequantize(out, self._output)

    def details(self) -> dict:
        info: dict = {
            "inputs": {k: str(np.dtype(v["dtype"])) for k, v in self._inputs.items()},
            "output_dtype": str(np.dtype(self._output["dtype"])),
        }
        arena = getattr(self.interpreter, "arena_used_bytes", None)
        if callable(arena):
            try:
                info["arena_used_bytes"] = int(arena())
            except Exception:  # not every interpreter build exposes it
                pass
        return info


def _quantize_input(value: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(value.dtype, np.floating) and dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale + zero), info.min, info.max).astype(dtype)
    return value.astype(dtype, copy=False)


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (value.astype(np.float32) - zero) * np.float32(scale)
    return value.astype(np.float32, copy=True)
