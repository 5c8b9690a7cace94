"""LiteRT (TFLite) runner: ai-edge-litert, or the legacy tflite-runtime as a fallback."""
from __future__ import annotations

import re
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
        details = self.interpreter.get_input_details()
        self._inputs = {d["name"]: d for d in details}
        # litert-torch names positional inputs "serving_default_args_0", "..._args_1": keep that order
        self._ordered = sorted(details, key=lambda d: (_arg_position(d["name"]), d["index"]))
        self._output = self.interpreter.get_output_details()[0]

    def _input_detail(self, position: int, name: str) -> dict:
        if name in self._inputs:
            return self._inputs[name]
        for key, detail in self._inputs.items():  # "serving_default_input_ids:0" style
            if name in key:
                return detail
        if position < len(self._ordered):
            return self._ordered[position]
        raise KeyError(f"artifact has no input named {name!r} (has {sorted(self._inputs)})")

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        for position, (name, value) in enumerate(inputs.items()):
            detail = self._input_detail(position, name)
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


def _arg_position(name: str) -> int:
    match = re.search(r"args_(\d+)", name)
    return int(match.group(1)) if match else 1 << 30


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
