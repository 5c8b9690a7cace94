"""PyTorch Lite Interpreter runner for `.ptl` files (needs torch on the device)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import EntryPoint, Runner, RunnerUnavailable, TensorInfo


QENGINE_ENV = "EDGEPACK_TORCH_QENGINE"


class TorchLiteRunner(Runner):
    runtime = "torch-lite"
    distributions = ("torch",)

    def __init__(self, path: Path, threads: int | None = None, **kwargs) -> None:
        super().__init__(path, threads, **kwargs)
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

        self._finish_load()

    def _describe(self) -> list[EntryPoint]:
        """A `.ptl` carries no input metadata: lengths come from the manifest (``shapes``), else ``input_spec``'s
        static seq_len, else the inputs are run at their real length. Methods ``seq<N>`` are per-bucket entry points."""
        n_inputs = len(self.input_spec.inputs) if self.input_spec is not None else 2
        inputs = [TensorInfo(t.name, "int32", [1, None]) for t in self.input_spec.inputs] if self.input_spec else \
            [TensorInfo(f"input_{i}", "", [1, None]) for i in range(n_inputs)]
        outputs = [TensorInfo(t.name, "float32", list(t.shape)) for t in self.input_spec.outputs] if self.input_spec else \
            [TensorInfo("output_0", "float32", [])]
        shapes = self.shapes
        if shapes is not None and shapes.dynamic:
            return [EntryPoint("forward", inputs, outputs, None, max_length=int(shapes.dynamic.get("max", 0)) or None,
                               handle=self.module.forward)]
        if shapes is not None and shapes.buckets:
            entries = []
            for b in shapes.buckets:
                method = shapes.entry_points.get(str(b), "forward")
                entries.append(EntryPoint(method, inputs, outputs, int(b), handle=getattr(self.module, method)))
            return entries
        length = self.input_spec.seq_len if self.input_spec is not None else None
        return [EntryPoint("forward", inputs, outputs, length, handle=self.module.forward)]

    def _invoke(self, entry: EntryPoint, feed: list[np.ndarray]) -> list[np.ndarray]:
        args = [self._torch.from_numpy(np.ascontiguousarray(v)) for v in feed]
        with self._no_grad():
            out = entry.handle(*args)
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().float().numpy().copy() for o in outs]

    def details(self) -> dict:
        return {"quantized_engine": self._torch.backends.quantized.engine, "torch": self._torch.__version__}
