"""The agent's HTTP/JSON API, version 1 (standard library ``http.server``).

    GET  /v1/info                 device fingerprint, runtimes, energy/thermal sensors, agent process facts
    POST /v1/jobs                 body: bundle .tar.gz; header X-Edgepack-Options: JSON options -> 202 {id}
    GET  /v1/jobs                 all known jobs
    GET  /v1/jobs/{id}            status (queued|running|done|failed), progress, error
    GET  /v1/jobs/{id}/report     the BenchReport JSON (409 until done)

The agent speaks HTTPS (``AgentConfig.tls``: its self-signed certificate,
``tls.py``) unless started with ``--insecure-http``; a plain-HTTP request to
the TLS port gets one JSON 400 that says so and nothing else. The handshake runs
in the connection's own thread, never in the accepting one.

Every request needs ``Authorization: Bearer <token>`` when the agent has a
token (compared in constant time; a token file is re-read when it changes, so a
rotated token replaces the old one at once); a missing or wrong token gets 401
before anything else is looked at, whatever the method, and an upload body is
then not even read (nor is ``100 Continue`` sent). Wrong tokens cost the caller:
past a few per address, the address is locked out for an exponentially growing
while and answered 429 with ``Retry-After`` (``auth.AuthThrottle``). Every answer, errors of the
HTTP layer included, is JSON: ``{"error": "<one line>"}`` with a 4xx status
for anything the client got wrong, 503 (with ``Retry-After``) when the agent
is busy, and a last-resort 500 if a handler ever raises. The limits are in
``AgentConfig`` and ``uploads``; the README lists them with their answers.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from .auth import AuthThrottle, TokenSource
from .bench import BenchError, BenchOptions, default_memory_limit_mb, run_bench
from .client import OPTIONS_HEADER
from .energy import EnergyConfig, detect
from .fingerprint import AGENT_DISTRIBUTION, device_runtimes, fingerprint, package_version
from .jobs import DONE, FAILED, Job, JobStore, QueueFull
from .records import RecordError, load_json, one_line
from .report import BenchReport
from .thermal import ThermalConfig, read_zones
from .uploads import MAX_MEMBERS, UploadRejected, bundle_root, extract_archive, receive_body, validate_bundle

API_VERSION = 1
log = logging.getLogger("edgepack.agent")
#: packages the agent process must never import (they belong to the packing host or to worker subprocesses)
FORBIDDEN_MODULES = ("torch", "transformers", "litert_torch", "ai_edge_quantizer", "tensorflow", "packager", "targets")
MAX_OPTIONS_BYTES = 8 << 10  # the X-Edgepack-Options header
MAX_REQUEST_LINE = 65536
#: after answering, how much of an unread request body is drained so the answer is not lost to a TCP reset
_LINGER_BYTES, _LINGER_S = 1 << 20, 2.0
#: refused connections drained at once (a flood past it is closed without draining)
_REFUSALS_DRAINING = 32
#: how long a new connection has to send its first byte and complete the TLS handshake
_HANDSHAKE_S = 10.0
_TLS_HANDSHAKE_RECORD = 0x16


@dataclass
class AgentConfig:
    workdir: Path
    token: str | None = None
    token_file: Path | None = None  # re-read when it changes (rotation); instead of ``token``
    tls: ssl.SSLContext | None = None  # None: plain HTTP (--insecure-http)
    auth_free_failures: int = 10  # wrong tokens per address and window before lockouts start
    auth_window_s: float = 600.0
    auth_max_lock_s: float = 900.0
    auth_max_addresses: int = 4096  # addresses tracked at most (bounded bookkeeping)
    name: str | None = None
    max_upload_mb: int = 512
    keep_jobs: int = 20
    timeout_s: float = 600.0
    memory_limit_mb: int | None = field(default_factory=default_memory_limit_mb)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    sys_root: Path = Path("/sys")
    max_jobs_queued: int = 16  # queued or running; more -> 503
    max_inflight_uploads: int = 2  # received/unpacked/verified at once; others wait up to upload_wait_s, then 503
    upload_wait_s: float = 30.0
    max_connections: int = 64  # open connections (one handler thread each); more get an immediate 503

    @property
    def max_unpacked_bytes(self) -> int:
        return 4 * (self.max_upload_mb << 20)


def loaded_forbidden_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN_MODULES)


def parse_options(raw: str | None, config: AgentConfig) -> BenchOptions:
    """The client's options, decoded within bounds and checked by ``BenchOptions.from_remote`` against this agent."""
    try:
        data = load_json(raw, what=OPTIONS_HEADER, max_bytes=MAX_OPTIONS_BYTES, max_depth=4) if raw and raw.strip() else {}
    except RecordError as exc:
        raise UploadRejected(400, str(exc)) from None
    agent = BenchOptions(memory_limit_mb=config.memory_limit_mb, timeout_s=config.timeout_s)
    try:
        return BenchOptions.from_remote(data, agent)
    except BenchError as exc:
        raise UploadRejected(400, f"{OPTIONS_HEADER}: {exc}") from None


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    #: the listen backlog: a burst of clients (socketserver's default is 5) waits in the kernel, not refused
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], config: AgentConfig) -> None:
        self.config = config
        self.started_at = time.time()
        self.energy_detection = detect(config.energy)
        self.store = JobStore(config.workdir, self._run_job, keep=config.keep_jobs, max_pending=config.max_jobs_queued)
        self.upload_slots = threading.BoundedSemaphore(config.max_inflight_uploads)
        self.connection_slots = threading.BoundedSemaphore(config.max_connections)
        self.tokens = TokenSource(config.token, config.token_file)
        self.throttle = AuthThrottle(free_failures=config.auth_free_failures, window_s=config.auth_window_s,
                                     max_lock_s=config.auth_max_lock_s, max_addresses=config.auth_max_addresses)
        #: refused connections still being drained (bounded: past it, a refused socket is closed at once)
        self.refusals_draining = threading.BoundedSemaphore(_REFUSALS_DRAINING)
        super().__init__(address, AgentHandler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        """One thread per connection, up to ``max_connections``; past that, a 503 from the accepting thread."""
        if not self.connection_slots.acquire(blocking=False):
            return self._refuse(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connection_slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            if self.config.tls is not None:
                request = self._tls_accept(request, client_address)
                if request is None:
                    return
            super().process_request_thread(request, client_address)
        finally:
            self.connection_slots.release()

    def _tls_accept(self, request: socket.socket, client_address: Any) -> ssl.SSLSocket | None:
        """The TLS handshake, in this connection's thread; a plain-HTTP request gets a JSON 400 (in the clear, and
        nothing in it but that this agent speaks HTTPS). None: the connection is answered or gone."""
        peer = client_address[0] if client_address else "?"
        try:
            request.settimeout(_HANDSHAKE_S)
            first = request.recv(1, socket.MSG_PEEK)
        except OSError:
            self.close_request(request)
            return None
        if not first:
            self.close_request(request)
            return None
        if first[0] != _TLS_HANDSHAKE_RECORD:
            log.info("%s: a plain-HTTP request to the TLS port; answered 400", peer)
            self._answer_plain(request, 400, "this agent speaks HTTPS only: use an https:// URL and pin its certificate "
                                             "fingerprint (edgepack devices add NAME URL --fingerprint ...)")
            self.shutdown_request(request)
            return None
        try:
            return self.config.tls.wrap_socket(request, server_side=True)  # type: ignore[union-attr]
        except (ssl.SSLError, OSError) as exc:
            log.info("%s: TLS handshake failed: %s", peer, one_line(str(exc), 200))
            self.close_request(request)
            return None

    @staticmethod
    def _answer_plain(request: socket.socket, status: int, reason: str, extra: str = "") -> None:
        body = (json.dumps({"error": reason}) + "\n").encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode()
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass

    def _refuse(self, request: socket.socket) -> None:
        reason = f"{self.config.max_connections} connections are open (this agent's limit); retry later"
        if self.config.tls is not None:  # the answer needs a handshake: off the accepting thread, or not at all
            if self.refusals_draining.acquire(blocking=False):
                threading.Thread(target=self._refuse_tls, args=(request, reason), daemon=True,
                                 name="agent-refused-tls").start()
            else:
                self.shutdown_request_now(request)
            return
        try:
            request.setblocking(False)
            try:
                request.recv(1 << 16)  # what has arrived already, so closing does not reset the answer away
            except (BlockingIOError, InterruptedError):
                pass
        except OSError:
            self.close_request(request)
            return
        self._answer_plain(request, 503, reason, "Retry-After: 5\r\n")
        # the client may still be sending its body: closing now would reset the 503 away, so drain it first,
        # off the accepting thread (each drain is bounded by _LINGER_S; so is their number)
        if self.refusals_draining.acquire(blocking=False):
            threading.Thread(target=self._drain_refused, args=(request,), daemon=True,
                             name="agent-refused-drain").start()
        else:
            self.shutdown_request_now(request)

    def _refuse_tls(self, request: socket.socket, reason: str) -> None:
        try:
            tls = self._tls_accept(request, None)
            if tls is not None:
                self._answer_plain(tls, 503, reason, "Retry-After: 5\r\n")  # type: ignore[arg-type]
                self.shutdown_request(tls)
        finally:
            self.refusals_draining.release()

    def _drain_refused(self, request: socket.socket) -> None:
        try:
            self.shutdown_request(request)
        finally:
            self.refusals_draining.release()

    def shutdown_request_now(self, request: socket.socket) -> None:
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close_request(request)

    def _run_job(self, bundle: Path, options: dict[str, Any], progress) -> BenchReport:
        root = bundle_root(bundle)
        opts = BenchOptions(**options)
        return run_bench(root, opts, progress=progress, energy=self.config.energy, thermal=self.config.thermal,
                         device=self.config.name, sys_root=self.config.sys_root)

    def limits(self) -> dict[str, Any]:
        """The resource envelope, as /v1/info reports it (README: "Agent API")."""
        from . import uploads

        return {"max_upload_mb": self.config.max_upload_mb, "max_unpacked_mb": self.config.max_unpacked_bytes >> 20,
                "max_manifest_bytes": uploads.MAX_MANIFEST_BYTES, "max_members": MAX_MEMBERS,
                "max_depth": uploads.MAX_DEPTH, "max_path_bytes": uploads.MAX_PATH_BYTES,
                "max_options_bytes": MAX_OPTIONS_BYTES, "max_jobs_queued": self.config.max_jobs_queued,
                "max_inflight_uploads": self.config.max_inflight_uploads, "max_connections": self.config.max_connections}

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
                "limits": self.limits(),
            },
            "fingerprint": fingerprint(sys_root=self.config.sys_root),
            "runtimes": device_runtimes(),
            "energy": self.energy_detection.to_dict(),
            "thermal": {"root": str(self.config.thermal.root), "zones": read_zones(self.config.thermal.root),
                        "threshold_c": self.config.thermal.threshold_c},
        }

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr (the handler has already answered)."""
        exc = sys.exc_info()[1]
        log.warning("connection from %s: %s", client_address[0] if client_address else "?",
                    one_line(f"{type(exc).__name__}: {exc}"))

    def shutdown_request(self, request: socket.socket) -> None:
        """Close gracefully: stop sending, drain (bounded) what the client still sends, then close.

        Closing a socket with unread input makes the kernel send a reset, which
        can destroy the answer (a 401 or 413 sent before the body was read)
        before the client reads it.
        """
        try:
            request.shutdown(socket.SHUT_WR)
            request.settimeout(0.25)
            deadline, drained = time.monotonic() + _LINGER_S, 0
            while drained < _LINGER_BYTES and time.monotonic() < deadline:
                chunk = request.recv(1 << 16)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass
        self.close_request(request)


class AgentHandler(BaseHTTPRequestHandler):
    server: AgentServer
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # never answer without a status line (http.server omits it for "HTTP/0.9")
    timeout = 30  # seconds a stalled client may hold its connection between reads

    def version_string(self) -> str:
        return f"edgepack-agent/{package_version(AGENT_DISTRIBUTION) or 'dev'}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.info("%s %s", self.address_string(), one_line(format % args))

    # -- the request loop: every request gets one JSON answer ------------------------
    def handle_one_request(self) -> None:
        self._answered = False
        self.command, self.request_version, self.requestline = None, self.default_request_version, ""
        try:
            self.raw_requestline = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, f"request line over {MAX_REQUEST_LINE} bytes")
                return
            if not self.parse_request():  # it has answered (400, 431, 505…) through send_error below
                return
            self._dispatch()
            self.wfile.flush()
        except (TimeoutError, ConnectionError) as exc:
            self.close_connection = True
            if not self._answered and self.requestline and not isinstance(exc, ConnectionError):
                self._try_error(HTTPStatus.REQUEST_TIMEOUT, "the request stalled")
        except Exception as exc:  # noqa: BLE001 - last resort: an answer, a log line, the agent serves on
            log.error("internal error answering %r: %s", one_line(self.requestline, 100),
                      one_line(f"{type(exc).__name__}: {exc}"))
            self.close_connection = True
            if not self._answered:
                self._try_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(exc).__name__}); the agent logged it")

    def _try_error(self, status: int, reason: str) -> None:
        try:
            self._error(status, reason, close=True)
        except OSError:
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, header too long, bad version…) as JSON, not HTML."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:  # a client fault: 4xx, as every client fault here
            code, message = HTTPStatus.BAD_REQUEST, f"{message or phrase}; use HTTP/1.1"
        self._error(code, message or phrase, close=True)

    def handle_expect_100(self) -> bool:
        return True  # 100 Continue is sent by _submit, after the token and the headers have been checked

    def send_response_only(self, code: int, message: str | None = None) -> None:
        if code >= 200:
            self._answered = True
        super().send_response_only(code, message)

    # -- responses ----------------------------------------------------------------
    def _send(self, status: int, payload: Any, close: bool = False, extra: dict[str, str] | None = None) -> None:
        if self.request_version == "HTTP/0.9":  # http.server would drop the status line and headers
            self.request_version = "HTTP/1.0"
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
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, reason: str, close: bool = False, extra: dict[str, str] | None = None) -> None:
        self._send(status, {"error": one_line(reason)}, close=close, extra=extra)

    def _authorized(self) -> bool:
        server = self.server
        if not server.tokens.required:
            return True
        peer = self.client_address[0] if self.client_address else ""
        locked = server.throttle.retry_after(peer)
        if locked > 0:  # answered at once (no sleeping here): the lockout is the cost
            self._error(HTTPStatus.TOO_MANY_REQUESTS, f"too many wrong tokens from {peer}; retry in {locked:.0f} s",
                        close=True, extra={"Retry-After": str(max(1, math.ceil(locked)))})
            return False
        header = self.headers.get("Authorization")
        scheme, _, given = (header or "").partition(" ")
        ok = server.tokens.check(given.strip()) and scheme.lower() == "bearer"
        if ok:
            server.throttle.succeeded(peer)
            return True
        extra = {"WWW-Authenticate": 'Bearer realm="edgepack-agent"'}
        if header is not None:  # a credential was presented and was wrong: it counts (a missing one guesses nothing)
            lock = server.throttle.failed(peer)
            if lock > 0:
                log.warning("%s: wrong token again; locked out for %.0f s", peer, lock)
                extra["Retry-After"] = str(max(1, math.ceil(lock)))
        self._error(HTTPStatus.UNAUTHORIZED, "missing or wrong token", close=True, extra=extra)
        return False

    def _route(self) -> list[str]:
        parts = [p for p in self._target.split("/") if p]
        if not parts or parts[0] != f"v{API_VERSION}":
            return []
        return parts[1:]

    def _not_found(self) -> None:
        self._error(404, f"no such endpoint {one_line(self._target, 120)}")

    # -- methods ------------------------------------------------------------------
    def _dispatch(self) -> None:
        if len(self.requestline.split()) != 3:
            return self._error(400, "request line must be METHOD PATH HTTP/1.x", close=True)
        if not self.request_version.startswith("HTTP/1."):
            return self._error(400, f"{one_line(self.request_version, 20)} is not supported; use HTTP/1.1", close=True)
        if self.command != "POST" and (self.headers.get("Content-Length", "0").strip() not in ("", "0")
                                       or self.headers.get("Transfer-Encoding")):
            self.close_connection = True  # a body this handler will not read: do not parse it as the next request
        if not self._authorized():
            return
        try:
            self._target = urlsplit(self.path).path
        except ValueError:  # e.g. an absolute URL with a broken [IPv6] host
            return self._error(400, f"malformed request target {one_line(repr(self.path), 80)}", close=True)
        if self.command in ("GET", "HEAD"):
            return self._get()
        if self.command == "POST":
            return self._post()
        self._error(405, f"method {one_line(self.command, 20)} is not supported", close=True, extra={"Allow": "GET, HEAD, POST"})

    def _get(self) -> None:
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
                return self._error(404, f"no job {one_line(repr(parts[1]), 80)}")
            if len(parts) == 2:
                return self._send(200, job.public())
            if parts[2] == "report":
                return self._report(job)
        self._not_found()

    def _report(self, job: Job) -> None:
        if job.status == FAILED:
            return self._error(409, f"job {job.id} failed: {job.error}")
        if job.status != DONE:
            return self._error(409, f"job {job.id} is {job.status}; poll /v1/jobs/{job.id}")
        try:
            body = self.server.store.read_report(job.id)
        except (OSError, ValueError):
            return self._error(410, f"report of job {job.id} is gone")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _post(self) -> None:
        if self._route() != ["jobs"]:
            self.close_connection = True
            return self._not_found()
        try:
            self._submit()
        except UploadRejected as exc:
            log.info("upload rejected (%s): %s", exc.status, exc.reason)
            extra = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else None
            try:
                self._error(exc.status, exc.reason, close=True, extra=extra)
            except OSError:  # the client is already gone
                self.close_connection = True

    def _content_length(self) -> int:
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get_all("Transfer-Encoding"):
            if lengths:
                raise UploadRejected(400, "both Transfer-Encoding and Content-Length (RFC 9112 forbids it)")
            raise UploadRejected(411, "send the bundle with a Content-Length (no chunked encoding)")
        if not lengths:
            raise UploadRejected(411, "Content-Length required")
        if len(lengths) > 1:
            raise UploadRejected(400, "more than one Content-Length header")
        if not re.fullmatch(r"[0-9]{1,18}", lengths[0].strip()):
            raise UploadRejected(400, f"Content-Length {one_line(repr(lengths[0]), 40)} is not a number of bytes")
        return int(lengths[0])

    def _submit(self) -> None:
        config = self.server.config
        length = self._content_length()
        limit = config.max_upload_mb << 20
        if length <= 0:
            raise UploadRejected(400, "empty upload")
        if length > limit:
            raise UploadRejected(413, f"upload of {length / 2**20:.1f} MB is over this agent's limit of {config.max_upload_mb} MB")
        raw_options = self.headers.get_all(OPTIONS_HEADER) or []
        if len(raw_options) > 1:
            raise UploadRejected(400, f"more than one {OPTIONS_HEADER} header")
        opts = parse_options(raw_options[0] if raw_options else None, config)
        store = self.server.store
        if store.pending() >= config.max_jobs_queued:
            raise UploadRejected(503, f"{store.pending()} jobs are queued or running (limit {config.max_jobs_queued}); retry later", retry_after_s=30)
        if not self.server.upload_slots.acquire(timeout=config.upload_wait_s):
            raise UploadRejected(503, f"{config.max_inflight_uploads} uploads are already being received; retry later", retry_after_s=5)
        try:
            if self.headers.get("Expect", "").strip().lower() == "100-continue" and self.request_version >= "HTTP/1.1":
                self.send_response_only(HTTPStatus.CONTINUE)
                self.end_headers()
            job_id, job_dir = store.new_job_dir()
            try:
                archive = job_dir / "upload.tar"
                receive_body(self.rfile, length, archive)
                extract_archive(archive, job_dir / "bundle", max_bytes=config.max_unpacked_bytes)
                archive.unlink()
                manifest = validate_bundle(bundle_root(job_dir / "bundle"), opts.targets)
                job = Job(id=job_id, bundle=manifest.model.source, options=opts.to_dict())
                ahead = store.submit(job)
            except QueueFull as exc:
                store.discard(job_dir)
                raise UploadRejected(503, f"{exc}; retry later", retry_after_s=30) from None
            except BaseException:
                store.discard(job_dir)
                raise
        finally:
            self.server.upload_slots.release()
        self._send(202, {"id": job_id, "status": job.status, "jobs_ahead": ahead})
