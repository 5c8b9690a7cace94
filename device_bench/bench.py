"""Benchmark every runnable artifact of a bundle, each in its own subprocess.

For each target × thread count: wait for the SoC to cool, run the timing
pass (``worker`` in a fresh process, pinned, with a timeout and an
address-space limit) while the energy sampler runs here, read the
temperatures again, then run the memory pass in another fresh process. A
worker that crashes, hangs or runs out of memory fails that one row; the
others go on. Targets whose runtime this device lacks are skipped, saying so.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import psutil

from .compute import MacsPerLength, gmac_per_s
from .energy import EnergyConfig, EnergyError, EnergyMeter
from .extra_runners import ExtraRunnerError, register_extra_runners
from .fingerprint import cpu_model, device_model, device_runtimes, fingerprint
from .isa_mask.launch import IsaMaskError, masked_environ, masked_isa, profile_named
from .manifest import Manifest, ManifestError, TargetEntry, verify_files
from .parity import DeviceParity
from .records import RecordError, hints, matches, one_line
from .report import (RESULT_FAILED, RESULT_OK, RESULT_SKIPPED, BenchReport, MemoryMetrics, ParityCheck, ParityRow,
                     TargetResult, TimingMetrics, metric_values)
from .runners import RUNNERS, runner_class
from .speed_profile import from_bench, save_profile
from .thermal import ThermalConfig, read_zones, wait_until_cool
from .worker import MemoryResult, TimingResult, WorkerArgs, WorkerError, decode_output

PROTOCOL_VERSION = 2  # 2: real-length inputs, per-length table, noise guard
#: progress(done, total, label): called before each measurement and once at the end
Progress = Callable[[int, int, str], None]
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])


class BenchError(RuntimeError):
    """The bundle or the options cannot be benchmarked; one-line message for the user."""


class WorkerCrash(RuntimeError):
    """A worker subprocess failed; the message is the one-line reason shown in the report."""


def default_memory_limit_mb() -> int:
    """Address-space cap per worker: the machine's RAM, so a runaway runner fails before swapping the device to death."""
    return int(psutil.virtual_memory().total // 2**20)


#: how a remote host may set an option: "yes" as given, "limit" only lowered below the agent's own value, "no" never
REMOTE_YES, REMOTE_LIMIT, REMOTE_NO = "yes", "limit", "no"


def _option(default: Any = dataclasses.MISSING, *, flag: str, low: float | None = None, high: float | None = None,
            min_items: int = 0, max_items: int | None = None, max_len: int = 200, remote: str = REMOTE_YES,
            factory: Callable[[], Any] | None = None) -> Any:
    """A BenchOptions field with its bounds: numbers (and list items) finite and in [low, high]; lists of
    min_items..max_items; names of 1..max_len printable characters."""
    meta = {"flag": flag, "low": low, "high": high, "min_items": min_items, "max_items": max_items, "max_len": max_len,
            "remote": remote}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class BenchOptions:
    """The benchmark options: the one definition of their types and bounds.

    ``validate`` checks them (CLI and agent alike), ``from_remote`` is the
    agent's parser of the ``X-Edgepack-Options`` header and ``to_remote`` the
    host's encoder; both are derived from these fields, so an option added here
    is typed, bounded and carried over the wire without another edit.
    """

    targets: list[str] | None = _option(None, flag="--targets", max_items=64, max_len=200)
    runs: int = _option(100, flag="--runs", low=1, high=100_000)
    min_seconds: float = _option(1.0, flag="--min-seconds", low=0, high=600)
    warmup: int = _option(10, flag="--warmup", low=0, high=10_000)
    threads: list[int | None] = _option(flag="--threads", low=1, high=1024, min_items=1, max_items=16,
                                        factory=lambda: [None])
    timeout_s: float = _option(600.0, flag="--timeout", low=0.001, high=86_400, remote=REMOTE_LIMIT)
    memory_limit_mb: int | None = _option(flag="--memory-limit-mb", low=64, high=1 << 24, remote=REMOTE_LIMIT,
                                          factory=default_memory_limit_mb)
    memory_runs: int = _option(10, flag="--memory-runs", low=1, high=1000, remote=REMOTE_NO)
    pin: bool = _option(True, flag="--pin")

    def validate(self) -> None:
        """Raise ``BenchError`` (naming the flag) unless every option has its type and lies within its bounds."""
        types_ = hints(BenchOptions)
        for f in dataclasses.fields(self):
            _check_option(f, types_[f.name], getattr(self, f.name))
        if len(set(self.threads)) != len(self.threads):
            raise BenchError("--threads: a thread count is listed twice")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_remote(self, limits: Iterable[str] = ()) -> dict[str, Any]:
        """The options a host sends to an agent: every remote option, plus the ``limits`` the user set explicitly."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["remote"] == REMOTE_YES or (f.metadata["remote"] == REMOTE_LIMIT and f.name in limits
                                                      and value is not None):
                out[f.name] = value
        return out

    @classmethod
    def from_remote(cls, data: Any, agent: "BenchOptions") -> "BenchOptions":
        """Parse a host's options (decoded JSON) against ``agent``'s defaults and limits; ``BenchError`` if invalid."""
        if not isinstance(data, dict):
            raise BenchError("expected a JSON object of options")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        opts = dataclasses.replace(agent)
        for key, value in data.items():
            f = fields.get(key)
            if f is None or f.metadata["remote"] == REMOTE_NO:
                raise BenchError(f"unknown option {one_line(repr(key), 60)}")
            if f.metadata["remote"] == REMOTE_LIMIT:
                if value is None:
                    continue  # the agent's own limit applies
                _check_option(f, hints(cls)[key], value)
                own = getattr(agent, key)
                value = value if own is None else min(value, own)
            setattr(opts, key, value)
        opts.validate()
        return opts


def _check_option(f: dataclasses.Field, hint: Any, value: Any) -> None:
    meta = f.metadata
    flag, low, high = meta["flag"], meta["low"], meta["high"]
    shown = one_line(repr(value), 60)
    if not matches(value, hint):
        raise BenchError(f"{flag} {shown}: has the wrong type")
    if isinstance(value, list):
        if len(value) < meta["min_items"]:
            raise BenchError(f"{flag}: give at least {meta['min_items']} value(s)")
        if meta["max_items"] is not None and len(value) > meta["max_items"]:
            raise BenchError(f"{flag}: at most {meta['max_items']} values")
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, str):
            if not 0 < len(item) <= meta["max_len"] or not item.isprintable():
                raise BenchError(f"{flag} {shown}: names must be 1 to {meta['max_len']} printable characters")
            continue
        if isinstance(item, float) and not math.isfinite(item):
            raise BenchError(f"{flag} {shown}: must be a finite number")
        if (low is not None and item < low) or (high is not None and item > high):
            raise BenchError(f"{flag} {one_line(repr(item), 40)}: must be between {low:g} and {high:g}")


# -- worker subprocesses ---------------------------------------------------------

_ACTIVE: set[subprocess.Popen] = set()
_ACTIVE_LOCK = threading.Lock()


def kill_active_workers() -> None:
    """Kill the worker subprocesses still running (agent shutdown)."""
    with _ACTIVE_LOCK:
        procs = list(_ACTIVE)
    for proc in procs:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_reason(rc: int, stderr_tail: str) -> str:
    sig = -rc
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    lowered = stderr_tail.lower()
    if "bad_alloc" in lowered or "out of memory" in lowered or "memoryerror" in lowered:
        return f"out of memory: worker died with {name}"
    if sig == signal.SIGKILL:
        return "killed by SIGKILL (likely the kernel's out-of-memory killer)"
    return f"crashed: worker died with {name}" + (f" ({stderr_tail})" if stderr_tail else "")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def run_worker(args: WorkerArgs, timeout_s: float,
               base_env: dict[str, str] | None = None) -> TimingResult | MemoryResult | DeviceParity:
    """Run one worker process; its typed result, or ``WorkerCrash`` with a one-line reason. ``base_env``: the
    worker's environment (default this process's; ``isa_mask.launch.masked_environ``: another x86 family's kernels).

    Whatever happens here (timeout, a bad argument, an exception while talking
    to it), the worker's process group is killed before this returns: no
    worker outlives its measurement.
    """
    env = dict(os.environ if base_env is None else base_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_PARENT, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "device_bench.worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env, start_new_session=True,  # own process group: a timeout kills everything it spawned
    )
    with _ACTIVE_LOCK:
        _ACTIVE.add(proc)
    try:
        out, err = proc.communicate(json.dumps(dataclasses.asdict(args)), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise WorkerCrash(f"timed out after {timeout_s:g} s (worker killed)") from None
    finally:
        _kill_group(proc)  # also whatever it spawned; a no-op when the group is gone
        try:
            proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError, OSError):
            proc.kill()
            proc.wait()
        with _ACTIVE_LOCK:
            _ACTIVE.discard(proc)
    result: TimingResult | MemoryResult | DeviceParity | WorkerError | None = None
    lines = out.strip().splitlines()
    if lines:
        try:
            result = decode_output(lines[-1], args.mode)
        except RecordError:
            result = None
    if proc.returncode < 0:
        raise WorkerCrash(_signal_reason(proc.returncode, _last_line(err)))
    if isinstance(result, WorkerError):
        raise WorkerCrash(result.error)
    if proc.returncode != 0 or result is None:
        tail = _last_line(err)
        raise WorkerCrash(f"worker exited with status {proc.returncode}" + (f": {tail}" if tail else " and no result"))
    return result


# -- planning ---------------------------------------------------------------------

def choose_affinity(threads: int | None, allowed: list[int]) -> list[int] | None:
    """Pin N threads to the N highest-numbered allowed CPUs (big cores on big.LITTLE boards, away from CPU0's interrupts)."""
    if threads is None or not allowed:
        return None
    return sorted(allowed)[-threads:]


def _allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _select_targets(manifest: Manifest, names: list[str] | None) -> list[TargetEntry]:
    if not names:
        return list(manifest.targets)
    known = {t.name for t in manifest.targets}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BenchError(f"--targets: {unknown[0]!r} is not in this bundle (it has: {', '.join(sorted(known)) or 'none'})")
    return [manifest.target(n) for n in dict.fromkeys(names)]


def _base_result(entry: TargetEntry, threads: int | None, bundle: Path) -> TargetResult:
    size = None
    if entry.file and (bundle / entry.file).is_file():
        size = (bundle / entry.file).stat().st_size
    return TargetResult(target=entry.name, runtime=entry.runtime, precision=entry.precision, threads=threads,
                        status=RESULT_OK, file_size_bytes=size)


def _skip_reason(entry: TargetEntry, runtimes: dict[str, str | None], problems: dict[str, str]) -> tuple[str, str] | None:
    """(status, reason) for a target that will not be measured, else None."""
    if not entry.file or entry.status == "failed":
        return RESULT_SKIPPED, f"no artifact (export failed at pack time: {entry.error or 'unknown error'})"
    if entry.runtime not in RUNNERS:
        return RESULT_SKIPPED, f"unknown runtime {entry.runtime!r} (this agent knows: {', '.join(sorted(RUNNERS))})"
    if runtimes.get(entry.runtime) is None:
        try:
            dists = ", ".join(runner_class(entry.runtime).distributions)
        except (ImportError, AttributeError):
            dists = f"a runner module for {entry.runtime!r}"
        return RESULT_SKIPPED, f"runtime {entry.runtime!r} is not installed on this device (needs {dists})"
    if entry.name in problems:
        return RESULT_FAILED, problems[entry.name]
    return None


def _integrity_problems(bundle: Path, manifest: Manifest, entries: list[TargetEntry]) -> dict[str, str]:
    out: dict[str, str] = {}
    digests: dict[Path, str] = {}  # one hash per file, however many targets list it
    for entry in entries:
        if entry.file and entry.status != "failed":
            problems = verify_files(bundle, dataclasses.replace(manifest, targets=[entry]), digests)
            if problems:
                out[entry.name] = problems[0].split(": ", 1)[-1]
    return out


# -- the bench ---------------------------------------------------------------------

def _noise_note(res: TargetResult) -> None:
    """Say on the row which of its figures were measured while the machine was busy."""
    figures = [("real-length", res.noise)] + [(f"length {row.length}", row.noise) for row in res.by_length]
    noisy = [f"{label} ({', '.join(n.reasons)})" for label, n in figures if n is not None and n.noisy]
    if noisy:
        res.notes.append(f"noisy: {'; '.join(noisy)}: the machine was not quiet, do not compare these figures")


def timed_lengths(entry: TargetEntry, manifest: Manifest) -> list[int]:
    """The per-length table's lengths: the target's buckets, else the pack's buckets, else powers of two up to
    seq_len (dynamic targets); seq_len always (the old single-shape figure)."""
    seq_len = manifest.input_spec.seq_len
    if entry.shapes is not None and entry.shapes.buckets:
        lengths = list(entry.shapes.buckets)
    elif manifest.input_spec.buckets:
        lengths = list(manifest.input_spec.buckets)
    elif entry.shapes is not None and entry.shapes.dynamic:
        lengths = [n for n in (8, 16, 32, 64, 128, 256, 512) if n < seq_len]
    else:
        lengths = []
    return sorted(set(lengths) | {seq_len})


def add_compute(res: TargetResult, macs: MacsPerLength) -> None:
    """MACs per inference and achieved GMAC/s on the row (at the real inputs' mean length) and on each per-length
    row (at the length the artifact ran: the bucket it was padded to, if any)."""
    if res.input_lengths is not None and res.latency_ms is not None:
        res.macs_per_inference = macs.at(res.input_lengths.mean)
        res.gmac_per_s = gmac_per_s(res.macs_per_inference, res.latency_ms.p50)
    for row in res.by_length:
        row.macs = macs.at(row.padded_to or row.length)
        row.gmac_per_s = gmac_per_s(row.macs, row.p50)


def worker_args(entry: TargetEntry, bundle: Path, manifest: Manifest, threads: int | None,
                memory_limit_mb: int | None, mode: str = "timing") -> WorkerArgs:
    """What every worker of one target needs: the artifact, its runtime and shapes, the bundle's inputs."""
    return WorkerArgs(
        mode=mode, runtime=entry.runtime, artifact=str(bundle / entry.file), samples=str(bundle / manifest.samples),
        input_names=[t.name for t in manifest.input_spec.inputs], input_dtypes=[t.dtype for t in manifest.input_spec.inputs],
        threads=threads, memory_limit_mb=memory_limit_mb,
        shapes=dataclasses.asdict(entry.shapes) if entry.shapes is not None else None,
        seq_len=manifest.input_spec.seq_len, bundle=str(bundle), target=entry.name,
    )


def _measure(entry: TargetEntry, threads: int | None, bundle: Path, manifest: Manifest, opts: BenchOptions,
             meter: EnergyMeter | None, thermal: ThermalConfig | None, allowed: list[int]) -> TargetResult:
    res = _base_result(entry, threads, bundle)
    affinity = choose_affinity(threads, allowed) if opts.pin else None
    if threads is not None and allowed and threads > len(allowed):
        res.notes.append(f"{threads} threads on {len(allowed)} CPUs: oversubscribed")
    args = dataclasses.replace(
        worker_args(entry, bundle, manifest, threads, opts.memory_limit_mb), runs=opts.runs,
        min_seconds=opts.min_seconds, warmup=opts.warmup, affinity=affinity, memory_runs=opts.memory_runs,
        lengths=timed_lengths(entry, manifest), length_runs=max(5, min(30, opts.runs)),
    )
    if thermal is not None:
        res.thermal = wait_until_cool(thermal)
    try:
        if meter is not None:
            with meter.sampling() as sampler:
                timing = run_worker(args, opts.timeout_s)
        else:
            sampler, timing = None, run_worker(args, opts.timeout_s)
    except WorkerCrash as exc:
        res.status, res.error = RESULT_FAILED, str(exc)
        return res
    finally:
        if res.thermal is not None and thermal is not None:
            res.thermal.after_c = read_zones(thermal.root)
    res = dataclasses.replace(res, **metric_values(timing, TimingMetrics))
    _noise_note(res)
    if manifest.model.macs is not None:
        add_compute(res, manifest.model.macs)
    if res.input_lengths is not None and manifest.input_spec.token_lengths is not None:
        res.input_lengths.truncated = manifest.input_spec.token_lengths.truncated
    if meter is not None:
        try:
            res.energy = meter.result(sampler, tuple(timing.window_monotonic), timing.cpu_time_s, timing.runs)
        except (ValueError, TypeError) as exc:
            res.notes.append(f"energy not computed: {exc}")
    try:
        memory = run_worker(dataclasses.replace(args, mode="memory"), opts.timeout_s)
    except WorkerCrash as exc:
        res.notes.append(f"memory pass failed: {exc}")
    else:
        res = dataclasses.replace(res, **metric_values(memory, MemoryMetrics))
        res.runtime_details = {**res.runtime_details, "rss_before_load_mb": memory.rss_before_load_mb}
    return res


def device_parity(args: WorkerArgs, manifest: Manifest, timeout_s: float,
                  base_env: dict[str, str] | None = None) -> DeviceParity | None:
    """The pack's parity gates recomputed here (``base_env``: the worker's environment, see ``run_worker``), in a
    worker of their own; None for a bundle without parity inputs (packed before they were recorded). A check that
    cannot run says why instead of passing."""
    if manifest.parity_inputs is None:
        return None
    try:
        return run_worker(dataclasses.replace(args, mode="parity"), timeout_s, base_env)
    except WorkerCrash as exc:
        return DeviceParity(passed=False, error=f"parity check failed: {exc}")


def protocol(opts: BenchOptions, energy: EnergyConfig | None, thermal: ThermalConfig | None) -> dict[str, Any]:
    """What was done, written into every report so figures can be compared honestly."""
    return {
        "version": PROTOCOL_VERSION,
        "options": opts.to_dict(),
        "inputs": "the bundle's samples.npz rows at their real length (`lengths`), batch 1, cycled in order; each "
                  "padded only to the smallest length the artifact accepts (latency_ms, latency_inputs=real-length); "
                  "by_length: inputs of exactly N tokens, one row per bucket (the largest is the old static figure)",
        "noise_guard": "during each timed window: CPU time other processes used (system busy time minus this "
                       "worker's, in cores) and the runs' coefficient of variation within one padded length; "
                       "noisy when other processes took > 10% of a core or CV > 10%",
        "isolation": "one fresh subprocess per target x threads for timing, another for memory",
        "load": "cold = first load in a fresh process (runtime import + file read; page cache not dropped); "
                "warm = second load of the same file in that process",
        "timing": "perf_counter_ns around each run after warm-up; runs until both `runs` and `min_seconds` are met; "
                  "gc disabled inside the window; std is the sample std",
        "parity": "separate pass, once per target: the bundle's parity inputs (parity.npz) run batch 1 through the artifact and compared "
                  "with their fp32 reference outputs under the pack's gates, overall and per length (device_parity)",
        "fastest": "per thread count, the lowest real-length p50 among the artifacts verified at pack time whose "
                   "device parity holds (report `fastest`); stored on the device as its speed profile, which "
                   "`edgepack run` and Bundle() default to",
        "memory": "separate pass: RSS before/after load, peak = max(RSS sampled every 5 ms, kernel high-water VmHWM) over memory_runs inferences",
        "cpu_util": "process CPU seconds (all threads) / wall seconds over the timed window",
        "affinity": "threads=N pinned to the N highest-numbered allowed CPUs; threads=default not pinned" if opts.pin else "not pinned",
        "limits": {"timeout_s": opts.timeout_s, "memory_limit_mb": opts.memory_limit_mb, "kind": "RLIMIT_AS set in the worker"},
        "thermal": None if thermal is None else {"root": str(thermal.root), "threshold_c": thermal.threshold_c, "max_wait_s": thermal.max_wait_s},
        "energy": None if energy is None else {
            **energy.protocol(),
            "integration": "samples on CLOCK_MONOTONIC, counters differenced / power trapezoid-integrated over the worker's timed window; "
                           "above-idle = total - idle baseline power x window",
        },
    }


def check_parity_here(bundle: Path, targets: list[str] | None = None, timeout_s: float = 600.0,
                      memory_limit_mb: int | None = None, isa: str | None = None) -> ParityCheck:
    """Recompute every runnable target's parity gates with this device's runtimes (torch-free; a worker each).
    ``isa``: with the kernels of that ``edgepack isa-mask`` profile's x86 family instead of this CPU's own."""
    try:
        register_extra_runners()
    except ExtraRunnerError as exc:
        raise BenchError(str(exc)) from None
    base_env = None
    if isa is not None:
        try:  # once, before any worker: refused here, or every worker's environment
            base_env = masked_environ(profile_named(isa))
        except (IsaMaskError, OSError) as exc:
            raise BenchError(f"--isa {isa}: {exc}") from None
    manifest = load_bundle(bundle)
    if manifest.parity_inputs is None:
        raise BenchError(f"{bundle}: the bundle carries no parity inputs (packed before edgepack recorded them): "
                         "pack it again to check parity on the device")
    entries = _select_targets(manifest, targets)
    runtimes = device_runtimes()
    problems = _integrity_problems(bundle, manifest, entries)
    check = ParityCheck(bundle=bundle.name, task=manifest.task, fingerprint=fingerprint())
    if isa is not None:  # what the workers' runtimes saw
        check.fingerprint.update(isa=masked_isa(profile_named(isa)), isa_mask=isa)
    limit = default_memory_limit_mb() if memory_limit_mb is None else (memory_limit_mb or None)
    for entry in entries:
        row = ParityRow(target=entry.name, runtime=entry.runtime, precision=entry.precision, threads=None,
                        status=RESULT_OK)
        reason = _skip_reason(entry, runtimes, problems)
        if reason is not None:
            row.status, row.error = reason
        else:
            row.device_parity = device_parity(worker_args(entry, bundle, manifest, None, limit, "parity"), manifest,
                                              timeout_s, base_env)
        check.results.append(row)
    return check


def bench_bundle(
    bundle_dir: Path | str,
    targets: list[str] | None = None,
    runs: int = 100,
    min_seconds: float = 1.0,
    warmup: int = 10,
    threads: list[int | None] | None = None,
    timeout_s: float = 600.0,
    memory_limit_mb: int | None = None,
    progress: Progress | None = None,
    *,
    energy: EnergyConfig | None = None,
    thermal: ThermalConfig | None = None,
    device: str | None = None,
    pin: bool = True,
    memory_runs: int = 10,
    sys_root: Path = Path("/sys"),
) -> BenchReport:
    """Benchmark the bundle's targets on this machine; see the module docstring for the protocol."""
    opts = BenchOptions(targets=targets, runs=runs, min_seconds=min_seconds, warmup=warmup,
                        threads=list(threads) if threads else [None], timeout_s=timeout_s, pin=pin, memory_runs=memory_runs,
                        memory_limit_mb=default_memory_limit_mb() if memory_limit_mb is None else (memory_limit_mb or None))
    return run_bench(Path(bundle_dir), opts, progress=progress, energy=energy, thermal=thermal, device=device,
                     sys_root=sys_root)


def load_bundle(bundle: Path) -> Manifest:
    if not bundle.is_dir():
        raise BenchError(f"{bundle}: not a directory")
    try:
        manifest = Manifest.load(bundle)
    except ManifestError as exc:
        raise BenchError(str(exc)) from None
    if not manifest.samples or not (bundle / manifest.samples).is_file():
        raise BenchError(f"{bundle}: bundle has no {manifest.samples or 'samples.npz'} (needed as benchmark inputs)")
    return manifest


def run_bench(bundle: Path, opts: BenchOptions, progress: Progress | None = None, energy: EnergyConfig | None = None,
              thermal: ThermalConfig | None = None, device: str | None = None, sys_root: Path = Path("/sys")) -> BenchReport:
    opts.validate()
    try:
        register_extra_runners()
    except ExtraRunnerError as exc:
        raise BenchError(str(exc)) from None
    manifest = load_bundle(bundle)
    entries = _select_targets(manifest, opts.targets)
    runtimes = device_runtimes()
    problems = _integrity_problems(bundle, manifest, entries)
    fp = fingerprint(sys_root=sys_root)
    plan: list[tuple[TargetEntry, int | None]] = []
    results: list[TargetResult] = []
    for entry in entries:
        reason = _skip_reason(entry, runtimes, problems)
        for t in opts.threads:
            if reason is None:
                plan.append((entry, t))
            else:
                r = _base_result(entry, t, bundle)
                r.status, r.error = reason
                results.append(r)
    energy = energy if energy is not None else EnergyConfig()
    if energy.device_model is None and energy.cpu_model is None:
        energy = dataclasses.replace(energy, device_model=device_model(), cpu_model=cpu_model())
    try:
        meter = EnergyMeter(energy)
    except EnergyError as exc:
        raise BenchError(str(exc)) from None
    thermal = thermal if thermal is not None else ThermalConfig()
    if plan:
        meter.measure_idle()
    allowed = _allowed_cpus()
    measured: dict[tuple[str, int | None], TargetResult] = {}
    checked: dict[str, DeviceParity | None] = {}  # each artifact's parity on this device
    for i, (entry, t) in enumerate(plan):
        if progress:
            progress(i, len(plan), f"{entry.name} threads={'default' if t is None else t}")
        res = _measure(entry, t, bundle, manifest, opts, meter, thermal, allowed)
        if res.status == RESULT_OK:  # once per artifact, not per thread count: the same file, the same kernels
            if entry.name not in checked:
                checked[entry.name] = device_parity(
                    worker_args(entry, bundle, manifest, t, opts.memory_limit_mb, "parity"), manifest, opts.timeout_s)
            res.device_parity = checked[entry.name]
        measured[(entry.name, t)] = res
    if progress:
        progress(len(plan), len(plan), "done")
    order = {(r.target, r.threads): r for r in results} | measured
    ordered = [order[(e.name, t)] for e in entries for t in opts.threads if (e.name, t) in order]
    proto = protocol(opts, energy, thermal)
    proto["energy"] = {**proto["energy"], **meter.detection.to_dict(), "idle_power_w": meter.idle_w}
    fastest = [p for p in (from_bench(manifest, ordered, t) for t in opts.threads) if p is not None]
    for profile in fastest:  # kept on this device: `edgepack run` and Bundle() default to its choice
        save_profile(profile)
    return BenchReport(
        fastest=fastest,
        device=device or fp["hostname"],
        fingerprint=fp,
        protocol=proto,
        bundle={"name": bundle.name, "model": manifest.model.source, "task": manifest.task,
                "seq_len": manifest.input_spec.seq_len, "edgepack_version": manifest.edgepack_version,
                "created_at": manifest.created_at,
                **({"ignored_manifest_fields": manifest.ignored_fields} if manifest.ignored_fields else {})},
        results=ordered,
    )
