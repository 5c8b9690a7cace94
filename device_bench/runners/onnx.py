"""onnxruntime runner for `.onnx` artifacts (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import EntryPoint, Runner, RunnerUnavailable, TensorInfo, sequence_length


class OnnxRunner(Runner):
    """One entry point; the sequence dimension is dynamic when the graph names it rather than fixing it."""

    runtime = "onnxruntime"
    distributions = ("onnxruntime",)
    spins = True

    def __init__(self, path: Path, threads: int | None = None, **kwargs) -> None:
        super().__init__(path, threads, **kwargs)
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerUnavailable("runtime 'onnxruntime' needs onnxruntime (pip install onnxruntime)") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if not self.spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._ort = ort
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        self._finish_load()

    def _describe(self) -> list[EntryPoint]:
        inputs = [TensorInfo(i.name, np.dtype(_numpy_dtype(i.type)).name, _dims(i.shape)) for i in self.session.get_inputs()]
        outputs = [TensorInfo(o.name, "float32", _dims(o.shape)) for o in self.session.get_outputs()]
        return [EntryPoint("main", inputs, outputs, sequence_length(inputs[0].shape) if inputs else None)]

    def _invoke(self, entry: EntryPoint, feed: list[np.ndarray]) -> list[np.ndarray]:
        outs = self.session.run(None, {info.name: value for info, value in zip(entry.inputs, feed)})
        return [np.asarray(o, dtype=np.float32).copy() for o in outs]

    def details(self) -> dict:
        return {"onnxruntime": self._ort.__version__, "providers": self.session.get_providers(),
                "inputs": {i.name: i.dtype for i in self.entry_points[0].inputs},
                "sequence_axis": "dynamic" if self.entry_points[0].length is None else "static"}


def _dims(shape) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


_ONNX_TYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32,
               "tensor(float16)": np.float16, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
               "tensor(bool)": np.bool_}


def _numpy_dtype(onnx_type: str):
    try:
        return _ONNX_TYPES[onnx_type]
    except KeyError:
        raise ValueError(f"unsupported ONNX input type {onnx_type}") from None
