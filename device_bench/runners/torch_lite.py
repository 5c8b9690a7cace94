"""PyTorch Lite Interpreter runner for `.ptl` files (needs torch on the device)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Runner, RunnerUnavailable


QENGINE_ENV = "EDGEPACK_TORCH_QENGINE"


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
        # Quantized kernels. edgepack packs and verifies int8 .ptl files for qnnpack, what ARM
        # phones and boards run. On x86 the x86/fbgemm kernels are faster but quantize activations
        # to 7 bits (reduce_range): MiniLM cosine fell from 0.994 to 0.981 here, so they are opt-in.
        engines = torch.backends.quantized.supported_engines
        wanted = os.environ.get(QENGINE_ENV, "qnnpack")
        if wanted not in engines:
            raise RunnerUnavailable(f"{QENGINE_ENV}={wanted}: quantized engine not in this torch build ({', '.join(engines)})")
        torch.backends.quantized.engine = wanted
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
