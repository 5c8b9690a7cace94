"""Which verified artifact of a bundle is fastest on this device, by measurement: the speed profile and its store.

A profile is measured either by ``edgepack bench`` (local, or the agent's bench on the device: real-length p50
of every artifact, with the parity the bench recomputes here) or, when none exists yet, by a short timed
probe when ``Bundle()`` loads (``probe``: each candidate artifact timed round-robin on the bundle's own sample
rows, a fraction of a second). ``Bundle()`` and ``edgepack run`` then default to the profile's ``chosen``
target; ``--target`` still wins.

A thread count given to ``Bundle()`` / ``edgepack run --threads N`` is a budget: the profile compares each artifact
at 1 thread and at N (and the powers of two between), because on short inputs a runtime's per-op thread hand-off can
cost more than the second core gives (XNNPACK at 12 tokens: 1.29 ms on 2 threads, 1.03 ms on 1). The chosen
artifact runs at the thread count it was fastest with (``chosen_threads``).

Profiles live on the device, never in the bundle (which may be read-only there): one JSON file per bundle
identity x device key under ``$EDGEPACK_SPEED_CACHE``, else ``$XDG_CACHE_HOME/edgepack/speed``, else
``~/.cache/edgepack/speed``; written atomically. The device key hashes what decides speed (machine, CPU model,
the ISA flags the kernels dispatch on, the runtimes' versions, the CPUs this process may use, the thread
count); the bundle identity hashes the artifacts' sha256 and the pack's time, so a rebuilt bundle never reuses
a stale profile. An unreadable or foreign profile is ignored with a one-line warning.
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .fingerprint import AGENT_DISTRIBUTION, cpu_isa, cpu_model, device_model, device_runtimes, package_version
from .manifest import STATUS_OK, Manifest, ManifestError, TargetEntry, check_version
from .fstree import write_private
from .records import RecordError, from_dict, load_json, one_line
from .user_cache import user_cache

#: Same evolution rule as the manifest and the report: additive fields bump the minor, a new major is refused.
SPEED_SCHEMA_VERSION = 1
SPEED_SCHEMA_MINOR = 1  # 1: TargetSpeed.threads, SpeedProfile.chosen_threads
CACHE_ENV = "EDGEPACK_SPEED_CACHE"
MAX_PROFILE_BYTES = 1 << 20

SOURCE_BENCH, SOURCE_PROBE = "bench", "probe"
#: how a Bundle's target was chosen
HOW_TARGET, HOW_ORDER, HOW_ONLY, HOW_PROFILE, HOW_PROBE = "target", "order", "only", "profile", "probe"

#: the probe's bounds: a warm-up pass over the feeds each, then timed passes (every candidate in turn, every feed)
#: until both PROBE_MIN_PASSES passes and PROBE_BUDGET_S seconds are reached, or PROBE_MAX_PASSES passes
PROBE_BUDGET_S = 0.5
PROBE_MIN_PASSES = 3
PROBE_MAX_PASSES = 25
#: a probed runner has at least this many timed runs (PROBE_MIN_PASSES passes of at least one feed)
PROBE_MIN_RUNS = PROBE_MIN_PASSES

log = logging.getLogger("edgepack.speed")

if TYPE_CHECKING:
    from .report import TargetResult


@dataclass
class TargetSpeed:
    """One artifact's measured latency on real-length inputs: a bench's median (``p50_ms``) over ``runs`` runs, or a
    probe's median over passes of its mean per sample row (``runs`` = passes x rows)."""

    target: str
    runtime: str
    p50_ms: float
    runs: int
    p90_ms: float | None = None
    threads: int | None = None  # the thread count it ran with (None: the runtime's default)

    def label(self) -> str:
        return self.target + on_threads(self.threads)


@dataclass
class SpeedProfile:
    """Which verified artifact is fastest for one bundle on one device within one thread budget (``threads``),
    the thread count it runs with (``chosen_threads``), and the evidence."""

    bundle_id: str
    device_key: str
    chosen: str
    source: str  # "bench" | "probe"
    measured_at: str
    speeds: list[TargetSpeed] = field(default_factory=list)
    #: verified targets left out, and why (below the parity gate on this device, failed here)
    excluded: dict[str, str] = field(default_factory=dict)
    threads: int | None = None
    bundle_created_at: str | None = None
    edgepack_version: str | None = None
    device: dict[str, Any] = field(default_factory=dict)  # the fingerprint fields the device key hashes
    chosen_threads: int | None = None  # the thread count ``chosen`` was fastest with (profiles before minor 1: threads)
    schema_version: int = SPEED_SCHEMA_VERSION
    schema_minor: int = SPEED_SCHEMA_MINOR

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"schema_version": d.pop("schema_version"), "schema_minor": d.pop("schema_minor"), **d}

    @classmethod
    def from_dict(cls, data: Any, where: str = "speed profile") -> "SpeedProfile":
        """``RecordError`` (one line) unless ``data`` is a profile this edgepack reads."""
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected a JSON object")
        try:
            check_version(data.get("schema_version"), data.get("schema_minor", 0), where, SPEED_SCHEMA_VERSION)
        except ManifestError as exc:
            raise RecordError(str(exc)) from None
        profile = from_dict(cls, data, where, ignore_unknown=True)
        if profile.source not in (SOURCE_BENCH, SOURCE_PROBE):
            raise RecordError(f"{where}.source {one_line(profile.source, 40)!r} is not bench or probe")
        if profile.chosen not in {s.target for s in profile.speeds}:
            raise RecordError(f"{where}.chosen {one_line(profile.chosen, 60)!r} is not among its speeds")
        if data.get("schema_minor", 0) < 1:  # written before thread choice: every artifact ran at the budget
            profile.chosen_threads = profile.threads
            for s in profile.speeds:
                s.threads = profile.threads
        if profile.chosen_speed() is None:
            raise RecordError(f"{where}.chosen_threads {profile.chosen_threads!r}: no speed of {profile.chosen} "
                              "at that thread count")
        return profile

    def speed(self, target: str, threads: int | None = None) -> TargetSpeed | None:
        """``target``'s measurement at ``threads`` (None: its fastest)."""
        mine = [s for s in self.speeds if s.target == target and (threads is None or s.threads == threads)]
        return min(mine, key=lambda s: s.p50_ms) if mine else None

    def chosen_speed(self) -> TargetSpeed | None:
        return next((s for s in self.speeds if s.target == self.chosen and s.threads == self.chosen_threads), None)

    def summary(self) -> str:
        """``tflite-int8 on 1 thread (p50 1.03 ms vs tflite-int8 on 2 threads 1.29 ms, onnx-int8 on 2 threads 1.52
        ms)``; thread counts are named only when the profile compared more than one."""
        best = self.chosen_speed()
        named = len({s.threads for s in self.speeds}) > 1

        def label(s: TargetSpeed) -> str:
            return s.label() if named else s.target

        others = sorted((s for s in self.speeds if s is not best), key=lambda s: s.p50_ms)
        vs = ", ".join(f"{label(s)} {s.p50_ms:.3g} ms" for s in others)
        return f"{label(best)} (p50 {best.p50_ms:.3g} ms" + (f" vs {vs}" if vs else ", the only one measured") + ")"


@dataclass
class Choice:
    """Which target a Bundle runs and why: ``how`` is target (asked for), order (the fixed order), only (one
    artifact can run here), profile (a stored profile), or probe (measured now)."""

    target: str
    how: str
    device_key: str | None = None
    profile: SpeedProfile | None = None
    path: str | None = None  # where the profile is stored
    notes: list[str] = field(default_factory=list)
    threads: int | None = None  # the thread count the target runs with (None: the runtime's default)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "threads": self.threads, "how": self.how, "device_key": self.device_key,
                "path": self.path, "profile": self.profile.to_dict() if self.profile else None,
                "notes": list(self.notes)}

    def describe(self) -> list[str]:
        """The choice and its evidence, for ``edgepack run --verbose``."""
        p = self.profile
        head = {HOW_TARGET: "asked for with --target", HOW_ORDER: "the fixed order (--choose order)",
                HOW_ONLY: "the only verified artifact the probe would time here (edgepack bench compares them all)"}.get(self.how)
        if head is None and p is not None:
            origin = (f"measured by edgepack bench at {p.measured_at}" if p.source == SOURCE_BENCH
                      else f"probed now ({sum(s.runs for s in p.speeds)} timed runs)" if self.how == HOW_PROBE
                      else f"cached probe from {p.measured_at}")
            head = f"fastest here: {p.summary()}, {origin}"
        lines = [f"target {self.target}{on_threads(self.threads)}: {head or self.how}"]
        if p is not None and p.excluded:
            lines += [f"  left out {name}: {why}" for name, why in p.excluded.items()]
        if self.device_key:
            threads = "default" if p is None or p.threads is None else p.threads
            lines.append(f"  device key {self.device_key} (thread budget {threads})"
                         + (f", profile {self.path}" if self.path else ""))
        lines += [f"  note: {n}" for n in self.notes]
        return lines


# -- keys ------------------------------------------------------------------------------

def speed_fingerprint(threads: int | None) -> dict[str, Any]:
    """The fingerprint fields that decide which artifact is fastest here."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"machine": platform.machine(), "cpu_model": cpu_model(), "device_model": device_model(),
            "isa": cpu_isa(), "cpus": os.cpu_count(), "cpus_allowed": allowed,
            "runtimes": {k: v for k, v in sorted(device_runtimes().items()) if v is not None}, "threads": threads}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def device_key(fields: dict[str, Any]) -> str:
    return _digest(fields)


def bundle_identity(manifest: Manifest) -> str:
    """The bundle's artifacts (name, runtime, sha256) and when it was packed: a rebuilt bundle differs."""
    return _digest({"created_at": manifest.created_at,
                    "targets": [[t.name, t.runtime, t.sha256] for t in manifest.runnable_targets()]})


# -- the store ---------------------------------------------------------------------------

def cache_dir() -> Path:
    return user_cache("speed", CACHE_ENV)


def profile_path(bundle_id: str, key: str) -> Path:
    return cache_dir() / f"{bundle_id}-{key}.json"


def read_profile(path: Path) -> SpeedProfile:
    """The profile stored at ``path``; ``RecordError`` (one line) when it is unreadable or not a profile."""
    try:
        data = load_json(path.read_bytes(), what=str(path), max_bytes=MAX_PROFILE_BYTES)
    except OSError as exc:
        raise RecordError(f"{path}: {exc.strerror or exc}") from None
    return SpeedProfile.from_dict(data, str(path))


def load_profile(bundle_id: str, key: str, warnings: list[str] | None = None) -> SpeedProfile | None:
    """This bundle's profile for this device key, None when there is none or it cannot be used (a one-line
    warning logged and added to ``warnings``)."""
    path = profile_path(bundle_id, key)
    if not path.is_file():
        return None
    try:
        profile = read_profile(path)
        if profile.bundle_id != bundle_id or profile.device_key != key:
            raise RecordError(f"{path}: profile of another bundle or device")
    except RecordError as exc:
        _warn(f"ignoring speed profile {one_line(exc, 300)}", warnings)
        return None
    return profile


def save_profile(profile: SpeedProfile, warnings: list[str] | None = None) -> Path | None:
    """Store ``profile`` (atomically); None, with a one-line warning, when the cache cannot be written."""
    path = profile_path(profile.bundle_id, profile.device_key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, (json.dumps(profile.to_dict(), indent=2) + "\n").encode())
        return path
    except OSError as exc:
        _warn(f"speed profile not saved to {path.parent}: {exc.strerror or exc} (set {CACHE_ENV} to a writable folder)",
              warnings)
        return None


def stored_profiles(manifest: Manifest) -> list[tuple[Path, SpeedProfile | None, str | None]]:
    """Every profile stored on this device for this bundle: (path, profile or None, the problem reading it)."""
    folder = cache_dir()
    out: list[tuple[Path, SpeedProfile | None, str | None]] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob(f"{bundle_identity(manifest)}-*.json")):
        try:
            out.append((path, read_profile(path), None))
        except RecordError as exc:
            out.append((path, None, one_line(exc, 300)))
    return out


def _warn(message: str, sink: list[str] | None) -> None:
    log.warning("edgepack: warning: %s", message)
    if sink is not None:
        sink.append(message)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def thread_count(threads: int) -> str:
    """``1 thread`` / ``2 threads``."""
    return f"{threads} thread{'s' * (threads > 1)}"


def on_threads(threads: int | None) -> str:
    """`` on 1 thread`` / `` on 2 threads``; empty for the runtime's default."""
    return "" if threads is None else f" on {thread_count(threads)}"


def thread_options(budget: int | None) -> list[int | None]:
    """The thread counts compared within a budget: 1, the powers of two below it, and the budget itself;
    the runtime's default alone when no budget is given."""
    if budget is None:
        return [None]
    options, t = {budget}, 1
    while t < budget:
        options.add(t)
        t *= 2
    return sorted(options)


def new_profile(manifest: Manifest, fields: dict[str, Any], source: str, speeds: list[TargetSpeed],
                excluded: dict[str, str] | None = None) -> SpeedProfile:
    best = min(speeds, key=lambda s: s.p50_ms)
    measured = {s.target for s in speeds}
    return SpeedProfile(bundle_id=bundle_identity(manifest), device_key=device_key(fields), chosen=best.target,
                        chosen_threads=best.threads, source=source, measured_at=now(), speeds=speeds,
                        excluded={k: v for k, v in (excluded or {}).items() if k not in measured},
                        threads=fields.get("threads"), bundle_created_at=manifest.created_at,
                        edgepack_version=package_version(AGENT_DISTRIBUTION), device=fields)


def covers(profile: SpeedProfile, names: Iterable[str]) -> bool:
    """Whether the profile decided among (at least) these targets: each measured or left out for a reason."""
    known = {s.target for s in profile.speeds} | set(profile.excluded)
    return all(name in known for name in names)


def from_bench(manifest: Manifest, results: "list[TargetResult]", threads: int | None) -> SpeedProfile | None:
    """The profile a bench's rows within one thread budget make (rows at ``threads`` and, for a budget, at the
    smaller counts the bench also ran): the fastest real-length p50 among the artifacts verified at pack time
    whose parity also holds on this device; None when no such row was measured."""
    verified = {t.name: t for t in manifest.runnable_targets() if t.status == STATUS_OK}
    speeds: list[TargetSpeed] = []
    excluded: dict[str, str] = {}
    for r in results:
        within = r.threads == threads or (threads is not None and r.threads is not None and r.threads <= threads)
        if not within or r.target not in verified:
            continue
        if r.status != "ok" or r.latency_ms is None or r.latency_inputs != "real-length":
            if r.status != "skipped":
                excluded[r.target] = f"not measured here: {r.error or r.status}"
            continue
        if r.device_parity is not None and not r.device_parity.passed:
            excluded[r.target] = "below its parity gate on this device: " + (
                r.device_parity.error or "; ".join(r.device_parity.shortfalls) or "failed")
            continue
        speeds.append(TargetSpeed(target=r.target, runtime=r.runtime, p50_ms=round(r.latency_ms.p50, 4),
                                  runs=int(r.runs or 0), p90_ms=round(r.latency_ms.p90, 4), threads=r.threads))
    if not speeds:
        return None
    return new_profile(manifest, speed_fingerprint(threads), SOURCE_BENCH, speeds, excluded)


# -- the probe -------------------------------------------------------------------------------

def probe_feeds(bundle_dir: Path, manifest: Manifest, limit: int = 8) -> list[dict[str, Any]]:
    """Up to ``limit`` of the bundle's sample rows (samples.npz), batch 1, at their real length."""
    import numpy as np

    if not manifest.samples:
        return []
    names = [spec.name for spec in manifest.input_spec.inputs]
    dtypes = {spec.name: spec.dtype for spec in manifest.input_spec.inputs}
    try:
        with np.load(Path(bundle_dir) / manifest.samples) as data:
            if any(n not in data.files for n in names):
                return []
            arrays = {n: data[n][:limit] for n in names}
            lengths = data["lengths"][:limit] if "lengths" in data.files else None
    except (OSError, ValueError, KeyError):
        return []
    rows = len(next(iter(arrays.values()))) if arrays else 0
    width = next(iter(arrays.values())).shape[1] if rows else 0
    return [{n: np.ascontiguousarray(a[i:i + 1, : int(lengths[i]) if lengths is not None else width],
                                     dtype=dtypes.get(n) or a.dtype) for n, a in arrays.items()} for i in range(rows)]


#: a probe candidate: a target's artifact at one thread count
Candidate = tuple[str, "int | None"]


def probe(runners: dict[Candidate, tuple[TargetEntry, Any]], feeds: list[dict[str, Any]],
          budget_s: float = PROBE_BUDGET_S) -> tuple[list[TargetSpeed], dict[str, str]]:
    """Time the loaded runners (one per target and thread count) on ``feeds`` and return each one's mean ms per
    feed (median over passes), with the reasons of the targets that failed.

    A warm-up pass first runs every feed once on each runner: a runtime's first run at a new length allocates,
    and a probe that timed it charged the dynamic-shape artifacts for it. Then passes: in each, every runner in
    turn (who goes first rotates) runs all the feeds back to back, after one untimed run that brings its weights
    back into the caches, as an app calling one model does (interleaving runners feed by feed evicted each
    one's warm state for the other), until PROBE_MIN_PASSES passes and ``budget_s`` (at most
    PROBE_MAX_PASSES; a slow device stops at 4 x ``budget_s`` with what it has). Every runner is judged on the
    same mix of lengths, pass by pass. A runner that fails is left out, with its reason. Load the runners with
    ``spin=False``: a runtime's worker spinning after its block takes a core from the next one's.
    """
    failed: dict[str, str] = {}
    passes: dict[Candidate, list[float]] = {name: [] for name in runners}

    def run_once(name: Candidate, feed: dict[str, Any]) -> float | None:
        t0 = time.perf_counter_ns()
        try:
            runners[name][1].run(feed)
        except Exception as exc:  # a runtime's own error types vary; the probe never crashes the load
            failed[name[0]] = f"probe run failed: {_reason(exc)}"
            passes.pop(name, None)
            return None
        return (time.perf_counter_ns() - t0) / 1e6

    for feed in feeds:  # warm-up
        for name in list(passes):
            run_once(name, feed)
    start = time.perf_counter()
    for i in range(PROBE_MAX_PASSES):
        elapsed = time.perf_counter() - start
        if (i >= PROBE_MIN_PASSES and elapsed >= budget_s) or (i >= 1 and elapsed >= 4 * budget_s):
            break
        order = list(passes)
        for name in order[i % len(order):] + order[:i % len(order)]:  # who goes first rotates pass by pass
            if run_once(name, feeds[0]) is None:  # untimed: its weights back in the caches the last runner used
                continue
            times = [run_once(name, feed) for feed in feeds]
            if name in passes:
                passes[name].append(sum(t for t in times if t is not None) / len(feeds))
    speeds = [TargetSpeed(target=name, runtime=runners[(name, threads)][0].runtime,
                          p50_ms=round(statistics.median(ms), 4), runs=len(ms) * len(feeds),
                          p90_ms=round(sorted(ms)[min(len(ms) - 1, int(0.9 * len(ms)))], 4), threads=threads)
              for (name, threads), ms in passes.items() if ms]
    return speeds, {name: why for name, why in failed.items() if name not in {s.target for s in speeds}}


def release(runners: dict[Candidate, tuple[TargetEntry, Any]], keep: Candidate | None) -> Any:
    """Drop every probed runner but ``keep``'s (returned): a small device holds one loaded artifact."""
    kept = runners[keep][1] if keep in runners else None
    runners.clear()
    gc.collect()
    return kept


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return one_line(text.splitlines()[0], 200) if text else type(exc).__name__
