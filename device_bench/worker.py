"""Measure ONE artifact in a fresh process; print one JSON object on stdout.

    python -m device_bench.worker '<json args>'      (or the JSON on stdin)

Three modes, each run in its own process by ``bench.py`` so they cannot disturb
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
* ``parity``: the pack's parity gates recomputed with this device's kernels on
  the bundle's parity inputs (``device_bench.parity``).

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

from .parity import DeviceParity
from .records import RecordError, from_dict
from .report import InputLengths, LatencyStats, LengthLatency, MemoryMetrics, NoiseGuard, TimingMetrics

EXIT_ERROR = 3  # the worker ran but the measurement failed; the JSON says why


@dataclass
class WorkerArgs:
    mode: str  # "timing" | "memory" | "parity"
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
    shapes: dict[str, Any] | None = None  # the manifest's shapes of this target (None: static seq_len)
    seq_len: int | None = None
    lengths: list[int] = field(default_factory=list)  # lengths timed one by one (the per-bucket table)
    length_runs: int = 30
    bundle: str | None = None  # parity: the bundle folder (manifest and parity inputs)
    target: str | None = None  # parity: the target checked

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


WorkerOutput = TimingResult | MemoryResult | DeviceParity | WorkerError
_OUTPUT_TYPES = {"timing": TimingResult, "memory": MemoryResult, "parity": DeviceParity}


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
    """The bundle's real sample rows as batch-1 inputs at their real length (``lengths`` in the samples file;
    files without it keep their padded rows), prepared before any timing."""
    import numpy as np

    with np.load(args.samples) as data:
        missing = [n for n in args.input_names if n not in data.files]
        if missing:
            raise WorkerFailure(f"samples file has no array {missing[0]!r} (has {sorted(data.files)})")
        arrays = {n: data[n] for n in args.input_names}
        lengths = data["lengths"] if "lengths" in data.files else None
    dtypes = dict(zip(args.input_names, args.input_dtypes)) if args.input_dtypes else {}
    rows = len(next(iter(arrays.values())))
    if rows == 0:
        raise WorkerFailure("samples file has no rows")
    width = next(iter(arrays.values())).shape[1]
    return [
        {n: np.ascontiguousarray(a[i : i + 1, : int(lengths[i]) if lengths is not None else width],
                                 dtype=dtypes.get(n, a.dtype)) for n, a in arrays.items()}
        for i in range(rows)
    ]


def length_feed(feed: dict[str, Any], length: int) -> dict[str, Any]:
    """An input of exactly ``length`` real tokens: the sample's tokens repeated (the mask keeps them all)."""
    import numpy as np

    out = {}
    for name, value in feed.items():
        if name == "attention_mask":
            out[name] = np.ones((1, length), dtype=value.dtype)
        else:
            reps = -(-length // max(1, value.shape[1]))
            out[name] = np.ascontiguousarray(np.tile(value, (1, reps))[:, :length])
    return out


def _other_busy_seconds() -> float | None:
    """CPU seconds every process of the machine has used (psutil's system-wide busy time), None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    t = psutil.cpu_times()
    return float(t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                 + getattr(t, "steal", 0.0))


def _load(args: WorkerArgs):
    from .manifest import Shapes
    from .runners import load_runner

    shapes = from_dict(Shapes, args.shapes, "shapes", ignore_unknown=True) if args.shapes else None
    if shapes is None and args.seq_len:  # a bundle from before minor 1: one static shape
        shapes = Shapes(buckets=[args.seq_len])
    return load_runner(args.runtime, args.artifact, threads=args.threads, shapes=shapes)


def _padded_length(runner, feed: dict[str, Any]) -> int | None:
    from .shapes import real_length

    choose = getattr(runner, "choose_length", None)
    try:
        return int(choose(real_length(feed))) if choose is not None else None
    except Exception:  # a device owner's runner without shape information
        return None


def _ms(ns: int) -> float:
    return ns / 1e6


def latency_stats(times_ns: list[int]) -> LatencyStats:
    import numpy as np

    ms = np.asarray(times_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(mean=float(ms.mean()), std=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
                        min=float(ms.min()), p50=float(p50), p90=float(p90), p99=float(p99), max=float(ms.max()))


def _cpu_seconds() -> float:
    """This process's CPU time, all threads, from the scheduler's own clock.

    getrusage() splits time into user and system by clock ticks and clamps each to stay monotonic, so
    over a window of a few milliseconds its sum can jump by a whole tick (measured: 6 CPU seconds per
    wall second on one pinned core); CLOCK_PROCESS_CPUTIME_ID counts nanoseconds of run time.
    """
    return time.process_time()


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
    busy0 = _other_busy_seconds()
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
    busy1 = _other_busy_seconds()
    padded = [_padded_length(runner, f) for f in feeds]
    by_length = [_time_length(runner, length_feed(feeds[0], k), k, args) for k in args.lengths]
    return TimingResult(
        latency_inputs="real-length",
        input_lengths=_length_summary(feeds, padded),
        noise=_noise(times, [padded[k % n] for k in range(len(times))], busy0, busy1, cpu1 - cpu0, wall_s),
        by_length=by_length,
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


NOISY_OTHER_CORES = 0.10  # other processes used more than 10% of one core during the window
NOISY_CV = 0.10  # coefficient of variation of runs at one length
MIN_WINDOW_S = 0.25  # the kernel counts CPU time in clock ticks (10 ms): shorter windows cannot be judged


def _cv(ns: list[int]) -> float:
    import numpy as np

    ms = np.asarray(ns, dtype=np.float64)
    return float(ms.std(ddof=1) / ms.mean()) if len(ms) > 1 and ms.mean() > 0 else 0.0


def _other_cores(busy0: float | None, busy1: float | None, own_cpu_s: float, wall_s: float) -> float | None:
    if busy0 is None or busy1 is None or wall_s < MIN_WINDOW_S:
        return None
    return max(0.0, (busy1 - busy0) - own_cpu_s) / wall_s


def _noise(times: list[int], padded: list[int | None], busy0: float | None, busy1: float | None, own_cpu_s: float,
           wall_s: float) -> NoiseGuard:
    """Was the window quiet? CPU other processes used (in cores) and the runs' CV within each padded length
    (lengths differ on purpose: the spread across lengths is not noise)."""
    groups: dict[Any, list[int]] = {}
    for t, length in zip(times, padded):
        groups.setdefault(length, []).append(t)
    weighted = [(len(g), _cv(g)) for g in groups.values() if len(g) > 1]
    cv = sum(n * c for n, c in weighted) / sum(n for n, _ in weighted) if weighted else 0.0
    return noise_verdict(_other_cores(busy0, busy1, own_cpu_s, wall_s), cv)


def noise_verdict(other_cores: float | None, cv: float) -> NoiseGuard:
    reasons = []
    if other_cores is not None and other_cores > NOISY_OTHER_CORES:
        reasons.append(f"other processes used {other_cores:.2f} cores")
    if cv > NOISY_CV:
        reasons.append(f"runs vary by CV {cv:.0%}")
    return NoiseGuard(cv=round(cv, 4), noisy=bool(reasons), reasons=reasons,
                      other_processes_cores=None if other_cores is None else round(other_cores, 4),
                      thresholds={"other_processes_cores": NOISY_OTHER_CORES, "cv": NOISY_CV})


def _length_summary(feeds: list[dict[str, Any]], padded: list[int | None]) -> InputLengths:
    import numpy as np

    from .shapes import real_length

    real = np.asarray([real_length(f) for f in feeds])
    counts: dict[str, int] = {}
    for p in padded:
        counts[str(p)] = counts.get(str(p), 0) + 1
    return InputLengths(n=int(len(real)), mean=round(float(real.mean()), 2), p50=float(np.percentile(real, 50)),
                        p90=float(np.percentile(real, 90)), max=int(real.max()), padded_to=counts)


def _time_length(runner, feed: dict[str, Any], length: int, args: WorkerArgs) -> LengthLatency:
    """Latency of inputs of exactly ``length`` tokens (one row of the per-bucket table)."""
    for _ in range(max(1, min(args.warmup, 5))):
        runner.run(feed)
    times = []
    busy0, cpu0, start = _other_busy_seconds(), _cpu_seconds(), time.perf_counter_ns()
    gc.disable()
    for _ in range(max(2, args.length_runs)):
        t0 = time.perf_counter_ns()
        runner.run(feed)
        times.append(time.perf_counter_ns() - t0)
    gc.enable()
    wall_s = (time.perf_counter_ns() - start) / 1e9
    busy1, cpu1 = _other_busy_seconds(), _cpu_seconds()
    stats = latency_stats(times)
    return LengthLatency(length=length, padded_to=_padded_length(runner, feed), runs=len(times), p50=stats.p50,
                         p90=stats.p90, p99=stats.p99, mean=stats.mean, std=stats.std,
                         noise=noise_verdict(_other_cores(busy0, busy1, cpu1 - cpu0, wall_s), _cv(times)))


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


def run_parity(args: WorkerArgs) -> DeviceParity:
    """The target's parity gates on this device's kernels (``device_bench.parity.check_artifact``)."""
    from .manifest import Manifest, ManifestError
    from .parity import ParityDataError, check_artifact

    if not args.bundle or not args.target:
        raise WorkerFailure("parity mode needs bundle and target")
    try:
        manifest = Manifest.load(Path(args.bundle))
        entry = manifest.target(args.target)
    except (ManifestError, KeyError) as exc:
        raise WorkerFailure(f"parity: {exc}") from None
    runner = _load(args)
    try:
        return check_artifact(Path(args.bundle), manifest, entry, runner)
    except ParityDataError as exc:
        raise WorkerFailure(f"parity: {exc}") from None


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
        if args.mode == "parity":
            return run_parity(args)
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
