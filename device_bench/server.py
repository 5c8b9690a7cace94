"""The agent's HTTP/JSON API, version 1 (standard library ``http.server``).

    GET  /v1/info                 device fingerprint, runtimes, energy/thermal sensors, agent process facts
    POST /v1/jobs                 body: bundle .tar.gz; header X-Edgepack-Options: JSON options -> 202 {id}
    GET  /v1/jobs                 all known jobs
    GET  /v1/jobs/{id}            status (queued|running|done|failed), progress, error
    GET  /v1/jobs/{id}/report     the BenchReport JSON (409 until done)

Every request needs ``Authorization: Bearer <token>`` when the agent has a
token (compared in constant time); a missing or wrong token gets 401 before
anything else is looked at, and an upload body is then not even read. Errors
are ``{"error": "<one line>"}`` with a 4xx status.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from .bench import BenchError, BenchOptions, default_memory_limit_mb, run_bench
from .client import OPTIONS_HEADER
from .energy import EnergyConfig, detect
from .fingerprint import AGENT_DISTRIBUTION, device_runtimes, fingerprint, package_version
from .jobs import DONE, FAILED, Job, JobStore
from .report import BenchReport
from .thermal import ThermalConfig, read_zones
from .uploads import UploadRejected, bundle_root, extract_archive, receive_body, validate_bundle

API_VERSION = 1
log = logging.getLogger("edgepack.agent")
#: packages the agent process must never import (they belong to the packing host or to worker subprocesses)
FORBIDDEN_MODULES = ("torch", "transformers", "litert_torch", "ai_edge_quantizer", "tensorflow", "packager", "targets")
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "targets": (list, type(None)), "runs": (int,), "min_seconds": (int, float), "warmup": (int,),
    "threads": (list,), "pin": (bool,), "timeout_s": (int, float), "memory_limit_mb": (int, type(None)),
}


@dataclass
class AgentConfig:
    workdir: Path
    token: str | None = None
    name: str | None = None
    max_upload_mb: int = 512
    keep_jobs: int = 20
    timeout_s: float = 600.0
    memory_limit_mb: int | None = field(default_factory=default_memory_limit_mb)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    sys_root: Path = Path("/sys")
    max_runs: int = 100_000
    max_min_seconds: float = 600.0


def loaded_forbidden_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN_MODULES)


def parse_options(raw: str | None, config: AgentConfig) -> BenchOptions:
    """The client's options, type-checked and clamped to this agent's limits."""
    try:
        data = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        raise UploadRejected(400, f"{OPTIONS_HEADER}: not valid JSON") from None
    if not isinstance(data, dict):
        raise UploadRejected(400, f"{OPTIONS_HEADER}: expected a JSON object")
    for key, value in data.items():
        if key not in _OPTION_TYPES:
            raise UploadRejected(400, f"{OPTIONS_HEADER}: unknown option {key!r}")
        if not isinstance(value, _OPTION_TYPES[key]) or (isinstance(value, bool) and bool not in _OPTION_TYPES[key]):
            raise UploadRejected(400, f"{OPTIONS_HEADER}: option {key!r} has the wrong type")
    if data.get("targets") is not None and not all(isinstance(t, str) for t in data["targets"]):
        raise UploadRejected(400, f"{OPTIONS_HEADER}: targets must be names")
    opts = BenchOptions(memory_limit_mb=config.memory_limit_mb, timeout_s=config.timeout_s)
    for key in ("targets", "runs", "min_seconds", "warmup", "threads", "pin"):
        if key in data:
            setattr(opts, key, data[key])
    if data.get("timeout_s"):
        opts.timeout_s = min(float(data["timeout_s"]), config.timeout_s)
    if data.get("memory_limit_mb"):
        opts.memory_limit_mb = min(int(data["memory_limit_mb"]), config.memory_limit_mb or int(data["memory_limit_mb"]))
    if opts.runs > config.max_runs or opts.min_seconds > config.max_min_seconds:
        raise UploadRejected(400, f"runs/min_seconds above this agent's limits ({config.max_runs} runs, {config.max_min_seconds:g} s)")
    try:
        opts.validate()
    except BenchError as exc:
        raise UploadRejected(400, str(exc)) from None
    return opts


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: AgentConfig) -> None:
        self.config = config
        self.started_at = time.time()
        self.energy_detection = detect(config.energy)
        self.store = JobStore(config.workdir, self._run_job, keep=config.keep_jobs)
        super().__init__(address, AgentHandler)

    def _run_job(self, bundle: Path, options: dict[str, Any], progress) -> BenchReport:
        root = bundle_root(bundle)
        opts = BenchOptions(**options)
        return run_bench(root, opts, progress=progress, energy=self.config.energy, thermal=self.config.thermal,
                         device=self.config.name, sys_root=self.config.sys_root)

    def info(self) -> dict[str, Any]:
        proc = psutil.Process()
        return {
            "api_version": API_VERSION,
            "agent": {
                "version": package_version(AGENT_DISTRIBUTION),
                "name": self.config.name,
                "pid": os.getpid(),
                "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                "uptime_s": round(time.time() - self.started_at, 1),
                "forbidden_modules_loaded": loaded_forbidden_modules(),
                "max_upload_mb": self.config.max_upload_mb,
                "timeout_s": self.config.timeout_s,
                "memory_limit_mb": self.config.memory_limit_mb,
                "jobs_pending": self.store.pending(),
            },
            "fingerprint": fingerprint(sys_root=self.config.sys_root),
            "runtimes": device_runtimes(),
            "energy": self.energy_detection.to_dict(),
            "thermal": {"root": str(self.config.thermal.root), "zones": read_zones(self.config.thermal.root),
                        "threshold_c": self.config.thermal.threshold_c},
        }


class AgentHandler(BaseHTTPRequestHandler):
    server: AgentServer
    protocol_version = "HTTP/1.1"
    timeout = 120  # a stalled client cannot hold a thread forever

    def version_string(self) -> str:
        return f"edgepack-agent/{package_version(AGENT_DISTRIBUTION) or 'dev'}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.info("%s %s", self.address_string(), format % args)

    # -- responses ----------------------------------------------------------------
    def _send(self, status: int, payload: Any, close: bool = False, extra: dict[str, str] | None = None) -> None:
        body = (json.dumps(payload) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, reason: str, close: bool = False) -> None:
        self._send(status, {"error": reason}, close=close)

    def _authorized(self) -> bool:
        token = self.server.config.token
        if not token:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
        if not ok:
            self._send(HTTPStatus.UNAUTHORIZED, {"error": "missing or wrong token"}, close=True,
                       extra={"WWW-Authenticate": 'Bearer realm="edgepack-agent"'})
        return ok

    def _route(self) -> list[str]:
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if not parts or parts[0] != f"v{API_VERSION}":
            return []
        return parts[1:]

    # -- methods ------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if not self._authorized():
            return
        parts = self._route()
        store = self.server.store
        if parts == ["info"]:
            return self._send(200, self.server.info())
        if parts == ["jobs"]:
            return self._send(200, {"jobs": [j.public() for j in store.list()]})
        if len(parts) in (2, 3) and parts[0] == "jobs":
            try:
                job = store.get(parts[1])
            except KeyError:
                return self._error(404, f"no job {parts[1]!r}")
            if len(parts) == 2:
                return self._send(200, job.public())
            if parts[2] == "report":
                return self._report(job)
        self._error(404, f"no such endpoint {urlsplit(self.path).path}")

    def _report(self, job: Job) -> None:
        if job.status == FAILED:
            return self._error(409, f"job {job.id} failed: {job.error}")
        if job.status != DONE:
            return self._error(409, f"job {job.id} is {job.status}; poll /v1/jobs/{job.id}")
        try:
            text = self.server.store.report_path(job.id).read_text()
        except OSError:
            return self._error(410, f"report of job {job.id} is gone")
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        if self._route() != ["jobs"]:
            return self._error(404, f"no such endpoint {urlsplit(self.path).path}", close=True)
        try:
            self._submit()
        except UploadRejected as exc:
            log.info("upload rejected (%s): %s", exc.status, exc.reason)
            try:
                self._error(exc.status, exc.reason, close=True)
            except OSError:  # the client is already gone
                self.close_connection = True

    def _submit(self) -> None:
        config = self.server.config
        if self.headers.get("Transfer-Encoding"):
            raise UploadRejected(411, "send the bundle with a Content-Length (no chunked encoding)")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise UploadRejected(411, "Content-Length required") from None
        limit = config.max_upload_mb << 20
        if length <= 0:
            raise UploadRejected(400, "empty upload")
        if length > limit:
            raise UploadRejected(413, f"upload of {length / 2**20:.1f} MB is over this agent's limit of {config.max_upload_mb} MB")
        opts = parse_options(self.headers.get(OPTIONS_HEADER), config)
        store = self.server.store
        job_id, job_dir = store.new_job_dir()
        try:
            archive = job_dir / "upload.tar"
            receive_body(self.rfile, length, archive)
            extract_archive(archive, job_dir / "bundle", max_bytes=4 * limit)
            archive.unlink()
            manifest = validate_bundle(bundle_root(job_dir / "bundle"), opts.targets)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        job = Job(id=job_id, bundle=manifest.model.source, options=opts.to_dict())
        ahead = store.submit(job)
        self._send(202, {"id": job_id, "status": job.status, "jobs_ahead": ahead})

    def _method_not_allowed(self) -> None:
        if self._authorized():
            self._error(405, f"{self.command} is not supported", close=True)

    do_PUT = do_DELETE = do_PATCH = _method_not_allowed  # noqa: N815
