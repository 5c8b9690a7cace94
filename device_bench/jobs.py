"""The agent's job queue: one benchmark at a time, state on disk, old jobs pruned.

A job lives in ``<workdir>/jobs/<id>/``: ``job.json`` (state, rewritten
atomically on every change), ``bundle/`` while it waits or runs, and
``report.json`` once done. The state does not depend on any client
connection; after a restart, finished jobs are still served and jobs that
were queued or running are marked failed. The bundle files are deleted once
a job finishes, and only the newest ``keep`` finished jobs are kept.
"""
from __future__ import annotations

import json
import logging
import queue
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .report import BenchReport

log = logging.getLogger("edgepack.agent")

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: ``<UTC date>T<time with microseconds>-<random>``; ids sort in submission order (older
#: agents wrote second-resolution ids, still accepted).
JOB_ID = re.compile(r"^[0-9]{8}T[0-9]{6}(?:[0-9]{6})?-[0-9a-f]{8}$")
#: run(bundle_dir, options, progress) -> report
BenchFn = Callable[[Path, dict[str, Any], Callable[[int, int, str], None]], BenchReport]


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
    def __init__(self, workdir: Path, bench: BenchFn, keep: int = 20) -> None:
        self.root = Path(workdir) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
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
            if not JOB_ID.match(d.name):
                continue
            try:
                job = Job(**json.loads((d / "job.json").read_text()))
            except (OSError, ValueError, TypeError):
                shutil.rmtree(d, ignore_errors=True)  # an upload cut off by a crash/restart
                continue
            if job.status in (QUEUED, RUNNING):
                job.status, job.error, job.finished_at = FAILED, "the agent restarted before this job finished", _now()
                self._save(job)
                shutil.rmtree(d / "bundle", ignore_errors=True)
            self._jobs[job.id] = job

    # -- API used by the server --------------------------------------------------------
    def submit(self, job: Job) -> int:
        """Queue a job whose bundle is already in place; returns how many jobs are ahead of it."""
        with self._lock:
            self._jobs[job.id] = job
            ahead = sum(1 for j in self._jobs.values() if j.status in (QUEUED, RUNNING) and j.id != job.id)
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
            job = self.get(job_id)
            self._update(job, status=RUNNING, started_at=_now())
            started = time.monotonic()
            try:
                report = self._bench(self.job_dir(job.id) / "bundle", job.options,
                                     lambda done, total, label: self._update(job, progress={"done": done, "total": total, "label": label}))
                self.report_path(job.id).write_text(report.to_json() + "\n")
                self._update(job, status=DONE, finished_at=_now())
            except Exception as exc:  # the job fails, the agent goes on serving
                log.exception("job %s failed", job.id)
                self._update(job, status=FAILED, finished_at=_now(), error=str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
            log.info("job %s %s in %.1f s", job.id, job.status, time.monotonic() - started)
            shutil.rmtree(self.job_dir(job.id) / "bundle", ignore_errors=True)
            self._prune()

    def _prune(self) -> None:
        with self._lock:
            finished = [j for j in sorted(self._jobs.values(), key=lambda j: j.id) if j.status in (DONE, FAILED)]
            old = finished[: max(0, len(finished) - self.keep)]
            for j in old:
                del self._jobs[j.id]
        for j in old:
            shutil.rmtree(self.job_dir(j.id), ignore_errors=True)
