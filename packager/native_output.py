"""Converters log from C++ and tqdm straight to file descriptors 1 and 2: silence them around a conversion."""
from __future__ import annotations

import contextlib
from typing import Iterator

from device_bench.native_output import fds_muted


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Converters log from C++ and tqdm straight to fds 1/2; keep the CLI's stdout (JSON) and stderr clean."""
    with fds_muted(1, 2):
        yield
