"""onnxruntime runner for `.onnx` artifacts (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Runner, RunnerUnavailable


class OnnxRunner(Runner):
    runtime = "onnxruntime"
    distributions = ("onnxruntime",)

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(path, threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerUnavailable("runtime 'onnxruntime' needs onnxruntime (pip install onnxruntime)") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        self._ort = ort
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        self._inputs = self.session.get_inputs()
        self._output = self.session.get_outputs()[0].name

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Map by name, else by position (the bundle's inputs come in the artifact's order)."""
        names = [i.name for i in self._inputs]
        if len(inputs) != len(names):
            raise ValueError(f"artifact takes {len(names)} inputs ({', '.join(names)}), got {len(inputs)}")
        by_name = all(k in names for k in inputs)
        pairs = zip(names, inputs.values()) if not by_name else ((k, inputs[k]) for k in names)
        feed = {}
        for meta, (name, value) in zip(self._inputs, pairs):
            feed[name] = np.ascontiguousarray(value, dtype=_numpy_dtype(meta.type))
        return feed

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        out = self.session.run([self._output], self._feed(inputs))[0]
        return np.asarray(out, dtype=np.float32).copy()

    def details(self) -> dict:
        return {"onnxruntime": self._ort.__version__, "providers": self.session.get_providers(),
                "inputs": {i.name: i.type for i in self._inputs}}


_ONNX_TYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32,
               "tensor(float16)": np.float16, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
               "tensor(bool)": np.bool_}


def _numpy_dtype(onnx_type: str):
    try:
        return _ONNX_TYPES[onnx_type]
    except KeyError:
        raise ValueError(f"unsupported ONNX input type {onnx_type}") from None
