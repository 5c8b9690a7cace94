"""Measure ONE artifact in a fresh process; print one JSON object on stdout.

    python -m device_bench.worker '<json args>'      (or the JSON on stdin)

Two modes, each run in its own process by ``bench.py`` so they cannot disturb
each other:

* ``timing``: cold load (first load in this process: runtime import + file
  read), first inference, warm load (the same file loaded again), warm-up,
  then timed runs until both ``runs`` and ``min_seconds`` are met. Every run
  is timed with ``perf_counter_ns``; CPU time of the process over the timed
  window gives the CPU utilisation; the window's CLOCK_MONOTONIC bounds let
  the parent integrate its power samples over exactly that window.
* ``memory``: RSS before and after load and peak RSS over a few inferences,
  sampled by a thread every few milliseconds (which would perturb timing,
  hence the separate pass) and cross-checked with the kernel's high-water mark.

Limits (address space, CPU affinity) are applied here, first thing, rather
than in the parent's ``preexec_fn``: the agent is multi-threaded and
``preexec_fn`` is unsafe with threads. Runtime libraries that print to stdout
are redirected to stderr so stdout carries only the result.
"""
from __future__ import annotations

import gc
import json
import os
import resource
import sys
import threading
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import RecordError, from_dict
from .report import LatencyStats, MemoryMetrics, TimingMetrics

EXIT_ERROR = 3  # the worker ran but the measurement failed; the JSON says why


@dataclass
class WorkerArgs:
    mode: str  # "timing" | "memory"
    runtime: str
    artifact: str
    samples: str
    input_names: list[str]
    input_dtypes: list[str] = field(default_factory=list)
    threads: int | None = None
    runs: int = 100
    min_seconds: float = 1.0
    warmup: int = 10
    max_runs: int = 1_000_000
    memory_runs: int = 10
    rss_interval_s: float = 0.005
    affinity: list[int] | None = None
    memory_limit_mb: int | None = None

    @classmethod
    def from_json(cls, text: str) -> "WorkerArgs":
        return from_dict(cls, json.loads(text), "worker arguments")


@dataclass
class TimingResult(TimingMetrics):
    """The timing pass: the report's timing metrics plus the window the parent integrates power over."""

    window_monotonic: list[float] = field(default_factory=list)  # [start, end] on CLOCK_MONOTONIC


@dataclass
class MemoryResult(MemoryMetrics):
    rss_before_load_mb: float = 0.0
    peak_rss_sampled_mb: float = 0.0
    memory_runs: int = 0


@dataclass
class WorkerError:
    error: str
    error_kind: str  # "oom" | "unavailable" | "failed"


WorkerOutput = TimingResult | MemoryResult | WorkerError
_OUTPUT_TYPES = {"timing": TimingResult, "memory": MemoryResult}


def encode_output(mode: str, result: WorkerOutput) -> str:
    """The one line a worker prints: its mode and its record."""
    return json.dumps({"mode": mode, "kind": "error" if isinstance(result, WorkerError) else "result",
                       "record": dataclasses.asdict(result)})


def decode_output(line: str, mode: str) -> WorkerOutput:
    """Parse a worker's line back into its typed record; ``RecordError`` when it is not one."""
    try:
        data = json.loads(line)
    except ValueError:
        raise RecordError("worker output is not JSON") from None
    if not isinstance(data, dict):
        raise RecordError("worker output has the wrong shape")
    if data.get("kind") == "error":
        return from_dict(WorkerError, data.get("record"), "worker error")
    if data.get("mode") != mode:
        raise RecordError(f"worker answered for mode {data.get('mode')!r}, not {mode!r}")
    return from_dict(_OUTPUT_TYPES[mode], data.get("record"), f"{mode} result")


class WorkerFailure(RuntimeError):
    """A measurement failure with a one-line reason (runtime missing, bad artifact, out of memory…)."""


def apply_limits(args: WorkerArgs) -> None:
    if args.memory_limit_mb:
        limit = int(args.memory_limit_mb) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if args.affinity and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(args.affinity))


def load_feeds(args: WorkerArgs) -> list[dict[str, Any]]:
    """The bundle's real sample rows as batch-1 inputs, prepared before any timing."""
    import numpy as np

    with np.load(args.samples) as data:
        missing = [n for n in args.input_names if n not in data.files]
        if missing:
            raise WorkerFailure(f"samples file has no array {missing[0]!r} (has {sorted(data.files)})")
        arrays = {n: data[n] for n in args.input_names}
    dtypes = dict(zip(args.input_names, args.input_dtypes)) if args.input_dtypes else {}
    rows = len(next(iter(arrays.values())))
    if rows == 0:
        raise WorkerFailure("samples file has no rows")
    return [
        {n: np.ascontiguousarray(a[i : i + 1], dtype=dtypes.get(n, a.dtype)) for n, a in arrays.items()}
        for i in range(rows)
    ]


def _load(args: WorkerArgs):
    from .runners import load_runner

    return load_runner(args.runtime, args.artifact, threads=args.threads)


def _ms(ns: int) -> float:
    return ns / 1e6


def latency_stats(times_ns: list[int]) -> LatencyStats:
    import numpy as np

    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(mean=float(ms.mean()), std=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
                        min=float(ms.min()), p50=float(p50), p90=float(p90), p99=float(p99), max=float(ms.max()))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_timing(args: WorkerArgs) -> TimingResult:
    feeds = load_feeds(args)
    n = len(feeds)
    t = time.perf_counter_ns()
    runner = _load(args)
    load_cold = time.perf_counter_ns() - t
    t = time.perf_counter_ns()
    out = runner.run(feeds[0])
    first = time.perf_counter_ns() - t
    del runner
    gc.collect()
    t = time.perf_counter_ns()
    runner = _load(args)
    load_warm = time.perf_counter_ns() - t
    for i in range(args.warmup):
        runner.run(feeds[i % n])

    min_ns = int(args.min_seconds * 1e9)
    times: list[int] = []
    gc.disable()  # a collection inside the window would be charged to one unlucky run
    cpu0, mono0, start = _cpu_seconds(), time.monotonic(), time.perf_counter_ns()
    i = 0
    while True:
        t0 = time.perf_counter_ns()
        runner.run(feeds[i % n])
        times.append(time.perf_counter_ns() - t0)
        i += 1
        if (i >= args.runs and time.perf_counter_ns() - start >= min_ns) or i >= args.max_runs:
            break
    end, mono1, cpu1 = time.perf_counter_ns(), time.monotonic(), _cpu_seconds()
    gc.enable()
    wall_s = (end - start) / 1e9
    return TimingResult(
        load_cold_ms=_ms(load_cold),
        load_warm_ms=_ms(load_warm),
        first_inference_ms=_ms(first),
        warmup_runs=args.warmup,
        runs=len(times),
        timed_s=wall_s,
        window_monotonic=[mono0, mono1],
        latency_ms=latency_stats(times),
        throughput_ips=len(times) / wall_s if wall_s > 0 else None,
        cpu_time_s=cpu1 - cpu0,
        cpu_util=(cpu1 - cpu0) / wall_s if wall_s > 0 else None,
        output_shape=[int(d) for d in getattr(out, "shape", ())],
        raw_ms=[round(_ms(x), 4) for x in times],
        affinity=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    )


class _RssSampler(threading.Thread):
    """Polls this process's RSS; keeps the maximum seen."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(daemon=True)
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop_event = threading.Event()
        self.peak = self._proc.memory_info().rss

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop_event.wait(self._interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        return self.peak


def _hwm_rss_bytes() -> int:
    """Kernel high-water RSS of this process image.

    Linux: ``VmHWM`` from /proc/self/status. Not ``ru_maxrss``: across
    fork+exec it keeps the parent's peak, so a worker started by a big
    process (the host CLI with torch loaded) would report the parent's RSS.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024  # Linux reports KiB


def run_memory(args: WorkerArgs) -> MemoryResult:
    import psutil

    feeds = load_feeds(args)
    proc = psutil.Process()
    sampler = _RssSampler(args.rss_interval_s)
    rss_before = proc.memory_info().rss
    sampler.start()
    try:
        runner = _load(args)
        rss_after_load = proc.memory_info().rss
        for i in range(max(1, args.memory_runs)):
            runner.run(feeds[i % len(feeds)])
    finally:
        peak = sampler.stop()
    details = runner.details()
    return MemoryResult(
        rss_before_load_mb=rss_before / 2**20,
        rss_after_load_mb=rss_after_load / 2**20,
        peak_rss_mb=max(peak, _hwm_rss_bytes()) / 2**20,
        peak_rss_sampled_mb=peak / 2**20,
        memory_runs=max(1, args.memory_runs),
        runtime_details=_jsonable(details),
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def measure(args: WorkerArgs) -> WorkerOutput:
    """Run the requested mode; failures come back as a ``WorkerError`` rather than a traceback."""
    from .extra_runners import register_extra_runners
    from .runners import RunnerUnavailable

    try:
        register_extra_runners()
        if args.mode == "timing":
            return run_timing(args)
        if args.mode == "memory":
            return run_memory(args)
        raise WorkerFailure(f"unknown mode {args.mode!r}")
    except MemoryError as exc:
        limit = f" (memory limit {args.memory_limit_mb} MB)" if args.memory_limit_mb else ""
        return WorkerError(f"out of memory{limit}: {_one_line(exc)}", "oom")
    except RunnerUnavailable as exc:
        return WorkerError(str(exc), "unavailable")
    except WorkerFailure as exc:
        return WorkerError(str(exc), "failed")
    except Exception as exc:  # the runtime's own exception types vary; report, do not crash
        return WorkerError(_one_line(exc), "failed")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    result_fd = os.dup(1)
    os.dup2(2, 1)  # runtimes that print (absl, XNNPACK) must not corrupt the JSON on stdout
    sys.stdout = sys.stderr
    mode = "unknown"
    try:
        args = WorkerArgs.from_json(argv[0] if argv else sys.stdin.read())
    except (ValueError, TypeError) as exc:
        result: WorkerOutput = WorkerError(f"bad worker arguments: {_one_line(exc)}", "failed")
    else:
        mode = args.mode
        apply_limits(args)
        result = measure(args)
    with os.fdopen(result_fd, "w") as out:
        out.write(encode_output(mode, result) + "\n")
    return EXIT_ERROR if isinstance(result, WorkerError) else 0


if __name__ == "__main__":
    sys.exit(main())
