"""How many threads this process's pools may use: the CPUs it may run on, not the host's.

Torch's intra-op pool, ONNX Runtime sessions and TFLite interpreters each default to every core of the host; two
packs side by side on a 16-core machine then run 4 pools of 16 threads on 16 cores and crawl. The count here is,
first of all, an explicit ``--threads`` / recipe ``threads``; else ``EDGEPACK_THREADS``; else the CPUs of this
process's affinity mask (``taskset``, a container's cpuset). Latency figures use a fixed small count instead
(``LATENCY_THREADS``), recorded with them, so they compare between hosts and runs.
"""
from __future__ import annotations

import os

#: the environment variable that caps every pool of a run (an explicit --threads wins)
THREADS_ENV = "EDGEPACK_THREADS"
#: torch threads of the quick host latency in the stage table (recorded in each row as ``latency_threads``)
LATENCY_THREADS = 2


def affinity_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is no such call)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def pool_threads(explicit: int | None = None) -> int:
    """Threads for one pool of this run: ``explicit``, else $EDGEPACK_THREADS, else the affinity's CPUs."""
    if explicit:
        return int(explicit)
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            if int(value) >= 1:
                return int(value)
        except ValueError:
            pass
        from .errors import EdgepackError

        raise EdgepackError(f"{THREADS_ENV}={value!r}: expected a whole number of threads, at least 1")
    return affinity_cpus()


def latency_threads(pool: int | None = None) -> int:
    """Threads of a latency figure: ``LATENCY_THREADS``, or fewer when the run's pool (``pool``) is smaller."""
    return max(1, min(LATENCY_THREADS, pool or pool_threads()))


#: the environment variables native pools read at start-up (OpenMP, MKL, TensorFlow's converters)
NATIVE_POOL_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def limit_native_pools(threads: int | None = None) -> int:
    """Size the pools that read their size from the environment once, at start-up (OpenMP, MKL, TensorFlow),
    to ``pool_threads(threads)``; a variable already set is left as it is. Call it before torch is imported."""
    count = pool_threads(threads)
    for name in NATIVE_POOL_ENV:
        os.environ.setdefault(name, str(count))
    return count
