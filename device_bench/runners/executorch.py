"""ExecuTorch runner for `.pte` programs, through ExecuTorch's Python runtime (``executorch.runtime``).

The pybindings hand back torch tensors, so this runner needs torch on the
device, like the `.ptl` runner; it is imported only when a `.pte` is run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Runner, RunnerUnavailable


class ExecuTorchRunner(Runner):
    runtime = "executorch"
    distributions = ("executorch",)

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(path, threads)
        try:
            import torch
            from executorch.runtime import Runtime
        except ImportError:
            raise RunnerUnavailable("runtime 'executorch' needs executorch and torch (pip install executorch)") from None
        self._torch = torch
        if threads:
            _set_threadpool(int(threads))
        self.program = Runtime.get().load_program(str(self.path))
        self.method = self.program.load_method("forward")

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        args = [self._torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
        out = self.method.execute(args)
        first = out[0] if isinstance(out, (list, tuple)) else out
        return np.asarray(first.detach().float().numpy() if hasattr(first, "detach") else first, dtype=np.float32).copy()

    def details(self) -> dict:
        from importlib import metadata

        info = {"executorch": metadata.version("executorch"), "methods": sorted(self.program.method_names)}
        try:
            from executorch.extension.pybindings import portable_lib

            info["threadpool_threads"] = int(portable_lib._threadpool_get_thread_count())
        except (ImportError, AttributeError):
            pass
        return info


def _set_threadpool(threads: int) -> None:
    """XNNPACK kernels run on ExecuTorch's own threadpool, not torch's; resize it when the build exposes it."""
    try:
        from executorch.extension.pybindings import portable_lib
    except ImportError:
        return
    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    if reset is not None:
        reset(threads)
