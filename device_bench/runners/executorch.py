"""ExecuTorch runner for `.pte` programs, through ExecuTorch's Python runtime (``executorch.runtime``).

The pybindings hand back torch tensors, so this runner needs torch on the
device, like the `.ptl` runner; it is imported only when a `.pte` is run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import EntryPoint, Runner, RunnerUnavailable, TensorInfo, sequence_length


_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
                 7: "float64", 11: "bool"}


class ExecuTorchRunner(Runner):
    """Every method of the program is an entry point, described by its ``MethodMeta``.

    The metadata gives each input's *upper-bound* sizes: a method exported with a bounded dynamic sequence
    dimension looks static there, so the manifest's ``shapes.dynamic`` says which methods take any length.
    """

    runtime = "executorch"
    distributions = ("executorch",)

    def __init__(self, path: Path, threads: int | None = None, **kwargs) -> None:
        super().__init__(path, threads, **kwargs)
        try:
            import torch
            from executorch.runtime import Runtime
        except ImportError:
            raise RunnerUnavailable("runtime 'executorch' needs executorch and torch (pip install executorch)") from None
        self._torch = torch
        if threads:
            _set_threadpool(int(threads))
        self.program = Runtime.get().load_program(str(self.path))
        self._finish_load()

    def _describe(self) -> list[EntryPoint]:
        dynamic = bool(self.shapes is not None and self.shapes.dynamic)
        entries = []
        for name in sorted(self.program.method_names):
            meta = self.program.metadata(name)
            inputs = [_info(f"input_{i}", meta.input_tensor_meta(i)) for i in range(meta.num_inputs())]
            outputs = [_info(f"output_{i}", meta.output_tensor_meta(i)) for i in range(meta.num_outputs())]
            bound = sequence_length(inputs[0].shape) if inputs else None
            entries.append(EntryPoint(name, inputs, outputs, None if dynamic else bound, max_length=bound,
                                      handle=self.program.load_method(name)))
        return entries

    def _invoke(self, entry: EntryPoint, feed: list[np.ndarray]) -> list[np.ndarray]:
        out = entry.handle.execute([self._torch.from_numpy(v) for v in feed])
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o.detach().float().numpy() if hasattr(o, "detach") else o, dtype=np.float32).copy()
                for o in outs]

    def details(self) -> dict:
        from importlib import metadata

        info = {"executorch": metadata.version("executorch"), "methods": sorted(self.program.method_names)}
        try:
            from executorch.extension.pybindings import portable_lib

            info["threadpool_threads"] = int(portable_lib._threadpool_get_thread_count())
        except (ImportError, AttributeError):
            pass
        return info


def _info(name: str, meta) -> TensorInfo:
    return TensorInfo(name, _SCALAR_TYPES.get(int(meta.dtype()), ""), [int(d) for d in meta.sizes()])


def _set_threadpool(threads: int) -> None:
    """XNNPACK kernels run on ExecuTorch's own threadpool, not torch's; resize it when the build exposes it."""
    try:
        from executorch.extension.pybindings import portable_lib
    except ImportError:
        return
    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    if reset is not None:
        reset(threads)
