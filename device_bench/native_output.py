"""Native runtimes and converters write from C++ straight to file descriptors 1 and 2: mute them for a moment.

One mechanism for the device side (a runtime's teardown chatter) and the packing side (converters' logs,
``edgepack run``'s runtime banners); Python exceptions raised inside still carry their reason.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

_STREAMS = {1: "stdout", 2: "stderr"}


def _flush(fds: tuple[int, ...]) -> None:
    for fd in fds:
        stream = getattr(sys, _STREAMS.get(fd, ""), None)
        if stream is not None:
            stream.flush()


@contextlib.contextmanager
def fds_muted(*fds: int) -> Iterator[None]:
    """Send ``fds`` to /dev/null inside the block; where they cannot be redirected (no such descriptor in a
    daemon, an interpreter shutting down) the block runs unmuted."""
    try:
        _flush(fds)
        saved = [os.dup(fd) for fd in fds]
    except (OSError, ValueError, AttributeError):
        yield
        return
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(sink, fd)
        try:
            yield
        finally:
            _flush(fds)
            for fd, copy in zip(fds, saved):
                os.dup2(copy, fd)
    finally:
        os.close(sink)
        for copy in saved:
            os.close(copy)


def mute_for_good(fd: int) -> None:
    """Send ``fd`` to /dev/null from now on (the last moments of a process)."""
    try:
        _flush((fd,))
        sink = os.open(os.devnull, os.O_WRONLY)
        os.dup2(sink, fd)
        os.close(sink)
    except (OSError, ValueError):
        pass
