"""PyTorch Lite Interpreter runner for `.ptl` files (needs torch on the device)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Runner, RunnerUnavailable


class TorchLiteRunner(Runner):
    runtime = "torch-lite"
    distributions = ("torch",)

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(path, threads)
        try:
            import torch  # noqa: PLC0415 - only this runner's process may import torch
            from torch.jit.mobile import _load_for_lite_interpreter
        except ImportError:
            raise RunnerUnavailable("runtime 'torch-lite' needs torch on this device (pip install torch)") from None
        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        # quantized kernels: qnnpack is what ARM phones/boards run; fall back when absent
        engines = torch.backends.quantized.supported_engines
        for engine in ("qnnpack", "fbgemm", "x86"):
            if engine in engines:
                torch.backends.quantized.engine = engine
                break
        self.module = _load_for_lite_interpreter(str(self.path))
        self._no_grad = torch.inference_mode

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        args = [self._torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
        with self._no_grad():
            out = self.module(*args)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().float().numpy().copy()

    def details(self) -> dict:
        return {"quantized_engine": self._torch.backends.quantized.engine, "torch": self._torch.__version__}
