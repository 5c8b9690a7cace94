"""LiteRT (TFLite) runner: ai-edge-litert, or the legacy tflite-runtime as a fallback.

Every signature of the file is an entry point (edgepack's bucketed artifacts
hold one per sequence length, ``seq16``, ``seq32``…); each is run through its
own signature runner, as litert-torch's returned model does.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .base import EntryPoint, Runner, RunnerUnavailable, TensorInfo, sequence_length


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

    def __init__(self, path: Path, threads: int | None = None, **kwargs) -> None:
        super().__init__(path, threads, **kwargs)
        interpreter_cls = _interpreter_class()
        self.interpreter = interpreter_cls(model_path=str(self.path), num_threads=threads or None)
        self._finish_load()

    def _describe(self) -> list[EntryPoint]:
        entries = []
        for key in self.interpreter.get_signature_list():
            runner = self.interpreter.get_signature_runner(key)
            # litert-torch names positional inputs "args_0", "args_1"…: keep forward()'s order
            ins = sorted(runner.get_input_details().items(), key=lambda kv: (_arg_position(kv[0]), kv[1]["index"]))
            outs = sorted(runner.get_output_details().items(), key=lambda kv: (_arg_position(kv[0]), kv[1]["index"]))
            inputs = [TensorInfo(name, np.dtype(d["dtype"]).name, _shape(d)) for name, d in ins]
            outputs = [TensorInfo(name, np.dtype(d["dtype"]).name, _shape(d)) for name, d in outs]
            entry = EntryPoint(key, inputs, outputs, sequence_length(inputs[0].shape) if inputs else None,
                               handle=(runner, dict(ins), dict(outs)))
            entries.append(entry)
        if not entries:  # a file without signatures: the interpreter's own inputs
            self.interpreter.allocate_tensors()
            ins = sorted(self.interpreter.get_input_details(), key=lambda d: (_arg_position(d["name"]), d["index"]))
            outs = self.interpreter.get_output_details()
            inputs = [TensorInfo(d["name"], np.dtype(d["dtype"]).name, _shape(d)) for d in ins]
            outputs = [TensorInfo(d["name"], np.dtype(d["dtype"]).name, _shape(d)) for d in outs]
            entries.append(EntryPoint("main", inputs, outputs, sequence_length(inputs[0].shape) if inputs else None,
                                      handle=(None, {d["name"]: d for d in ins}, {d["name"]: d for d in outs})))
        return entries

    def _invoke(self, entry: EntryPoint, feed: list[np.ndarray]) -> list[np.ndarray]:
        runner, ins, outs = entry.handle
        if runner is None:
            for info, value in zip(entry.inputs, feed):
                self.interpreter.set_tensor(ins[info.name]["index"], _quantize_input(value, ins[info.name]))
            self.interpreter.invoke()
            return [_dequantize(self.interpreter.get_tensor(outs[o.name]["index"]), outs[o.name]) for o in entry.outputs]
        result = runner(**{info.name: _quantize_input(value, ins[info.name]) for info, value in zip(entry.inputs, feed)})
        return [_dequantize(result[o.name], outs[o.name]) for o in entry.outputs]

    def _order(self, entry: EntryPoint, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [i.name for i in entry.inputs]
        if len(inputs) != len(names):
            raise ValueError(f"artifact takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        if all(k in inputs for k in names):
            return [inputs[k] for k in names]
        return list(inputs.values())  # the bundle's inputs come in forward()'s order, like args_0, args_1

    def details(self) -> dict:
        first = self.entry_points[0]
        info: dict = {
            "signatures": [e.name for e in self.entry_points],
            "inputs": {i.name: i.dtype for i in first.inputs},
            "output_dtype": first.outputs[0].dtype if first.outputs else None,
        }
        arena = getattr(self.interpreter, "arena_used_bytes", None)
        if callable(arena):
            try:
                info["arena_used_bytes"] = int(arena())
            except Exception:  # not every interpreter build exposes it
                pass
        return info


def _shape(detail: dict) -> list[int | None]:
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return [int(d) if int(d) >= 0 else None for d in shape]


def _arg_position(name: str) -> int:
    match = re.search(r"args_(\d+)", name)
    return int(match.group(1)) if match else 1 << 30


def _quantize_input(value: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(value.dtype, np.floating) and dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale + zero), info.min, info.max).astype(dtype)
    return np.ascontiguousarray(value, dtype=dtype)


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (value.astype(np.float32) - zero) * np.float32(scale)
    return value.astype(np.float32, copy=True)
