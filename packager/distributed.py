"""Which process of a distributed run this is, and the few collectives a recipe run needs.

``torchrun`` and ``accelerate launch`` start one process per device and describe it in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). Every rank trains (the HF
Trainer wraps the model in DDP), teacher logits and accuracy are computed on a shard per rank and
gathered here, and rank 0 alone packs and publishes while the others wait for its exit code.

Every wait has a timeout (``EDGEPACK_DIST_TIMEOUT`` seconds for training collectives,
``EDGEPACK_PUBLISH_TIMEOUT`` for the wait on rank 0's pack), so a dead rank fails the run instead of
hanging it. Without those variables set (a plain ``edgepack pack``) nothing here starts a process group.
"""
from __future__ import annotations

import math
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import numpy as np

DEFAULT_TIMEOUT_S = 1800.0  # the Trainer's own ddp_timeout default
DEFAULT_PUBLISH_TIMEOUT_S = 7200.0  # rank 0 converts and verifies every target meanwhile
TIMEOUT_ENV = "EDGEPACK_DIST_TIMEOUT"
PUBLISH_TIMEOUT_ENV = "EDGEPACK_PUBLISH_TIMEOUT"

_control_group: Any = None  # gloo group for CPU-side waits (also under nccl), with the training timeout
_publish_group: Any = None  # gloo group whose only wait is rank 0's pack, with the publish timeout


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run (a plain run is rank 0 of 1)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def record(self) -> dict[str, Any]:
        """What a manifest stage row says about where it ran."""
        return {"world_size": self.world_size, "backend": self.backend, "device": self.device}


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _env_seconds(name: str, default: float) -> float:
    from .errors import EdgepackError

    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise EdgepackError(f"{name}={raw!r}: expected a positive number of seconds")
    return value


def _device(local_rank: int) -> str:
    import torch

    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def current() -> Ranks:
    """This process's ranks: from the process group once started, else from the launcher's environment."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        local = _env_int("LOCAL_RANK", 0)
        return Ranks(dist.get_world_size(), dist.get_rank(), local, dist.get_backend(), _device(local))
    world = _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", 0)
    return Ranks(world, _env_int("RANK", 0), local, None, _device(local))


def is_main_process() -> bool:
    """Rank 0 (or a plain run): cheap, needs no process group; the CLI asks it before printing."""
    return _env_int("RANK", 0) == 0


def setup() -> Ranks:
    """Join the launcher's process group (gloo on CPU, nccl on GPUs), with timeouts on every collective."""
    global _control_group, _publish_group
    import torch
    import torch.distributed as dist

    ranks = current()
    if not ranks.distributed or dist.is_initialized() and _control_group is not None:
        return ranks
    timeout = timedelta(seconds=_env_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    publish_timeout = timedelta(seconds=_env_seconds(PUBLISH_TIMEOUT_ENV, DEFAULT_PUBLISH_TIMEOUT_S))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group(backend=backend, timeout=timeout)
    gloo = dist.get_backend() == "gloo"
    _control_group = dist.group.WORLD if gloo else dist.new_group(backend="gloo", timeout=timeout)
    _publish_group = dist.new_group(backend="gloo", timeout=publish_timeout)
    # launchers stop the other ranks with SIGTERM when one fails: unwind, so staging folders are removed
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    return current()


def teardown() -> None:
    global _control_group, _publish_group
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control_group = _publish_group = None


def _group() -> Any:
    return _control_group


def broadcast_object(obj: Any, *, src: int = 0, publish_wait: bool = False) -> Any:
    """``obj`` of rank ``src`` on every rank (a plain run returns it unchanged)."""
    import torch.distributed as dist

    if not current().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_publish_group if publish_wait else _group())
    return box[0]


def barrier() -> None:
    import torch.distributed as dist

    if current().distributed:
        dist.barrier(group=_group())


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over the ranks."""
    import torch
    import torch.distributed as dist

    if not current().distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, group=_group())
    return tensor.tolist()


def all_gather_object(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order."""
    import torch.distributed as dist

    ranks = current()
    if not ranks.distributed:
        return [obj]
    out: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(out, obj, group=_group())
    return out


def sharded_rows(n: int, width: int, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """An ``(n, width)`` float32 array whose rows each rank computes a strided share of, gathered on all.

    ``compute(indices)`` returns the rows for ``indices``; rank r takes rows r, r + world, ... so shares
    differ by at most one row.
    """
    import torch
    import torch.distributed as dist

    ranks = current()
    if not ranks.distributed:
        return np.asarray(compute(np.arange(n)), dtype=np.float32).reshape(n, width)
    world = ranks.world_size
    per_rank = math.ceil(n / world)
    mine = np.arange(ranks.rank, n, world)
    local = torch.zeros((per_rank, width), dtype=torch.float32)
    if len(mine):
        local[: len(mine)] = torch.from_numpy(np.asarray(compute(mine), dtype=np.float32).reshape(len(mine), width))
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local, group=_group())
    out = np.zeros((n, width), dtype=np.float32)
    for r, part in enumerate(parts):
        rows = np.arange(r, n, world)
        out[rows] = part[: len(rows)].numpy()
    return out


def broadcast_model(model) -> None:
    """Every rank takes rank 0's weights (after a stage: the best checkpoint rank 0 loaded, also across nodes)."""
    import torch.distributed as dist

    if not current().distributed:
        return
    for tensor in model.state_dict().values():
        if tensor.device.type == "cpu":
            dist.broadcast(tensor, src=0, group=_group())
        else:
            host = tensor.detach().cpu()
            dist.broadcast(host, src=0, group=_group())
            tensor.copy_(host)


def describe(ranks: Ranks) -> str:
    """``2 processes (gloo, cpu)``; ``1 process (cpu)`` for a plain run."""
    device = ranks.device.split(":")[0]
    if not ranks.distributed:
        return f"1 process ({device})"
    return f"{ranks.world_size} processes ({ranks.backend}, {device})"
