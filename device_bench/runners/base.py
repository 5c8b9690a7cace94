"""The one small interface every runtime implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np


class RunnerUnavailable(RuntimeError):
    """The runtime needed for an artifact is not installed on this device."""


class Runner(ABC):
    """Loads one artifact and runs batch-1 inference on named numpy inputs.

    ``run`` returns the first (only) model output as a float32 numpy array,
    dequantized if the artifact has integer outputs.
    """

    runtime: ClassVar[str]
    #: distributions that provide the runtime, first installed one wins
    distributions: ClassVar[tuple[str, ...]]

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = threads

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...

    def details(self) -> dict:
        """Runtime-specific facts worth reporting (arena size, delegate…)."""
        return {}

    @classmethod
    def installed_version(cls) -> str | None:
        for dist in cls.distributions:
            try:
                return f"{dist}=={metadata.version(dist)}"
            except metadata.PackageNotFoundError:
                continue
        return None

    @classmethod
    def require(cls) -> None:
        if cls.installed_version() is None:
            raise RunnerUnavailable(
                f"runtime {cls.runtime!r} needs one of: {', '.join(cls.distributions)} (pip install it on this device)"
            )
