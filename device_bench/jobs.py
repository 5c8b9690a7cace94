"""The agent's job queue: one benchmark at a time, state on disk, old jobs pruned.

A job lives in ``<workdir>/jobs/<id>/``: ``job.json`` (state, rewritten
atomically on every change), ``bundle/`` while it waits or runs, and
``report.json`` once done. The state does not depend on any client
connection; after a restart, finished jobs are still served and jobs that
were queued or running are marked failed. The bundle files are deleted once
a job finishes, and only the newest ``keep`` finished jobs are kept.

Start-up survives whatever it finds in the work dir: anything that is not a
well-formed job (a link, a FIFO, a tree thousands of levels deep, a job.json
that is garbage) is moved to ``<workdir>/quarantine/`` with one log line, and
the agent serves on. Folders are removed with ``fstree.remove_tree``, whose
cost does not depend on their depth.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import re
import secrets
import stat
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .fstree import remove_tree
from .records import RecordError, from_dict, load_json, one_line
from .report import BenchReport

log = logging.getLogger("edgepack.agent")

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: ``<UTC date>T<time with microseconds>-<random>``; ids sort in submission order (older
#: agents wrote second-resolution ids, still accepted).
JOB_ID = re.compile(r"^[0-9]{8}T[0-9]{6}(?:[0-9]{6})?-[0-9a-f]{8}$")
#: run(bundle_dir, options, progress) -> report
BenchFn = Callable[[Path, dict[str, Any], Callable[[int, int, str], None]], BenchReport]
MAX_JOB_FILE_BYTES = 1 << 20
QUARANTINE_KEEP = 10  # quarantined leftovers kept for inspection; older ones are deleted
#: what a job folder may hold: its state, its report, its bundle (while queued/running)
_JOB_FILES = {"job.json", "job.tmp", "report.json"}


class QueueFull(Exception):
    """More jobs are queued or running than this agent accepts."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Job:
    id: str
    bundle: str
    options: dict[str, Any]
    status: str = QUEUED
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    progress: dict[str, Any] = field(default_factory=lambda: {"done": 0, "total": 0, "label": "queued"})
    error: str | None = None

    def public(self) -> dict[str, Any]:
        return asdict(self)


class JobStore:
    def __init__(self, workdir: Path, bench: BenchFn, keep: int = 20, max_pending: int = 16) -> None:
        self.workdir = Path(workdir)
        self.root = self.workdir / "jobs"
        self.quarantine_dir = self.workdir / "quarantine"
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            self._quarantine(self.root, "the jobs folder is not a folder")
        self.root.mkdir(exist_ok=True)
        self.keep = keep
        self.max_pending = max_pending
        self._bench = bench
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._last_stamp = ""
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._recover()
        self._thread = threading.Thread(target=self._work, name="bench-worker", daemon=True)
        self._thread.start()

    # -- paths and persistence -----------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):  # ids come from URLs: never join anything else into a path
            raise KeyError(job_id)
        return self.root / job_id

    def new_job_dir(self) -> tuple[str, Path]:
        with self._lock:  # strictly increasing stamps, so sorting by id is submission order
            stamp = max(datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f"), self._last_stamp)
            if stamp == self._last_stamp:
                stamp = stamp[:9] + f"{int(stamp[9:]) + 1:012d}"
            self._last_stamp = stamp
        job_id = f"{stamp}-{secrets.token_hex(4)}"
        path = self.job_dir(job_id)
        path.mkdir()
        return job_id, path

    def _save(self, job: Job) -> None:
        path = self.job_dir(job.id) / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job.public(), indent=2))
        tmp.replace(path)

    def _recover(self) -> None:
        for d in sorted(self.root.iterdir()):
            try:
                job = self._read_leftover(d)
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, it must not stop the agent
                self._quarantine(d, one_line(exc, 200))
                continue
            if job is None:  # an upload cut off by a crash/restart
                if not remove_tree(d):
                    self._quarantine(d, "an unfinished upload that could not be removed")
                continue
            if job.status in (QUEUED, RUNNING):
                job.status, job.error, job.finished_at = FAILED, "the agent restarted before this job finished", _now()
                self._save(job)
            if job.status in (DONE, FAILED) and not remove_tree(d / "bundle"):
                self._quarantine(d, "its bundle could not be removed")
                continue
            self._jobs[job.id] = job
        self._prune_quarantine()

    def _read_leftover(self, d: Path) -> Job | None:
        """The job stored in folder ``d``, None for an unfinished upload; raises on anything hostile or broken."""
        if not JOB_ID.match(d.name):
            raise RecordError("not a job folder")
        if not stat.S_ISDIR(os.lstat(d).st_mode):
            raise RecordError("not a folder (a link, file or device)")
        names = set(os.listdir(d))
        for name in names - {"bundle"}:
            if name not in _JOB_FILES and not name.startswith("upload."):
                raise RecordError(f"unexpected entry {name!r}")
            if not stat.S_ISREG(os.lstat(d / name).st_mode):  # a FIFO would block the read below
                raise RecordError(f"{name} is not a regular file")
        if "bundle" in names and not stat.S_ISDIR(os.lstat(d / "bundle").st_mode):
            raise RecordError("bundle is not a folder")
        if "job.json" not in names:
            return None
        text = _read_regular(d / "job.json", MAX_JOB_FILE_BYTES)
        job = from_dict(Job, load_json(text, what="job.json", max_bytes=MAX_JOB_FILE_BYTES), "job.json")
        if job.id != d.name or job.status not in (QUEUED, RUNNING, DONE, FAILED):
            raise RecordError("job.json does not describe this job")
        if job.status == DONE and "report.json" not in names:
            raise RecordError("a finished job without its report")
        return job

    def _quarantine(self, path: Path, why: str) -> None:
        """Move a leftover out of the way (a rename: no cost in its depth) and say so in one line."""
        if self.quarantine_dir.is_symlink() or (self.quarantine_dir.exists() and not self.quarantine_dir.is_dir()):
            remove_tree(self.quarantine_dir)  # never move anything through a planted link
        self.quarantine_dir.mkdir(exist_ok=True)
        target = self.quarantine_dir / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}-{path.name[:60]}"
        try:
            os.replace(path, target)
        except OSError as exc:
            log.warning("work dir: cannot quarantine %s (%s): %s", path.name, why, one_line(exc, 120))
            return
        log.warning("work dir: quarantined %s (%s) to %s", one_line(path.name, 80), why, target)

    def _prune_quarantine(self) -> None:
        if not self.quarantine_dir.is_dir():
            return
        for old in sorted(self.quarantine_dir.iterdir())[:-QUARANTINE_KEEP]:
            remove_tree(old)

    # -- API used by the server --------------------------------------------------------
    def submit(self, job: Job) -> int:
        """Queue a job whose bundle is already in place; returns how many jobs are ahead of it."""
        with self._lock:
            ahead = sum(1 for j in self._jobs.values() if j.status in (QUEUED, RUNNING) and j.id != job.id)
            if ahead >= self.max_pending:
                raise QueueFull(f"{ahead} jobs are queued or running (this agent's limit is {self.max_pending})")
            self._jobs[job.id] = job
            self._save(job)
        self._queue.put(job.id)
        return ahead

    def get(self, job_id: str) -> Job:
        with self._lock:
            return self._jobs[job_id]

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.id)

    def pending(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.status in (QUEUED, RUNNING))

    def report_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "report.json"

    def read_report(self, job_id: str) -> bytes:
        """The stored report (a regular file, links not followed); OSError when gone."""
        return _read_regular(self.report_path(job_id), None).encode()

    def discard(self, job_dir: Path) -> None:
        """Remove a job folder that never became a job (a rejected upload)."""
        if not remove_tree(job_dir):
            self._quarantine(job_dir, "a rejected upload that could not be removed")

    def stop(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)

    # -- the single benchmark thread ------------------------------------------------------
    def _update(self, job: Job, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(job, k, v)
            self._save(job)

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self._run(self.get(job_id))
            except Exception as exc:  # noqa: BLE001 - the bench thread must outlive any one job
                log.error("job %s: %s", job_id, one_line(exc))

    def _run(self, job: Job) -> None:
        self._update(job, status=RUNNING, started_at=_now())
        started = time.monotonic()
        try:
            report = self._bench(self.job_dir(job.id) / "bundle", job.options,
                                 lambda done, total, label: self._update(job, progress={"done": done, "total": total, "label": label}))
            self.report_path(job.id).write_text(report.to_json() + "\n")
            self._update(job, status=DONE, finished_at=_now())
        except Exception as exc:  # the job fails, the agent goes on serving
            log.warning("job %s failed: %s", job.id, one_line(f"{type(exc).__name__}: {exc}"))
            self._update(job, status=FAILED, finished_at=_now(), error=one_line(str(exc).strip().splitlines()[0]) if str(exc).strip() else type(exc).__name__)
        finally:
            log.info("job %s %s in %.1f s", job.id, job.status, time.monotonic() - started)
            remove_tree(self.job_dir(job.id) / "bundle")
            self._prune()

    def _prune(self) -> None:
        with self._lock:
            finished = [j for j in sorted(self._jobs.values(), key=lambda j: j.id) if j.status in (DONE, FAILED)]
            old = finished[: max(0, len(finished) - self.keep)]
            for j in old:
                del self._jobs[j.id]
        for j in old:
            remove_tree(self.job_dir(j.id))


def _read_regular(path: Path, max_bytes: int | None) -> str:
    """Read a regular file without following a link or blocking on a FIFO; OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise OSError(f"{path.name} is {st.st_size} bytes (limit {max_bytes})")
        return f.read().decode("utf-8")
