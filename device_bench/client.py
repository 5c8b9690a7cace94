"""Host-side client of the agent's HTTP API (standard library only).

    client = AgentClient("https://pi.local:8765", token, fingerprint="AB:CD:…")
    job = client.submit(Path("out/minilm"), {"threads": [1, 2, 4]})
    client.wait(job, progress=lambda done, total, label: ...)
    report = client.report(job)

A bundle folder is archived on the fly (contents at the archive root, the
same layout as ``edgepack pack``'s ``.tar.gz``); an archive file is sent as is.

An ``https://`` agent is trusted by its pinned certificate fingerprint alone
(``tls.py``): every connection's handshake is checked against the pin before a
byte of the request (and so the token) is sent; an https URL without a pin is
refused before connecting.
"""
from __future__ import annotations

import http.client
import json
import ssl
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, Callable
from urllib.parse import quote, urlsplit

from .report import BenchReport
from .tls import (
    FingerprintError,
    PinMismatch,
    check_pin,
    client_context,
    normalize_fingerprint,
)

API = "/v1"
OPTIONS_HEADER = "X-Edgepack-Options"
FINAL_STATES = ("done", "failed")
Progress = Callable[[int, int, str], None]


class AgentError(RuntimeError):
    """The agent could not be reached or refused a request; one line, names the agent."""


def read_token(token: str | None = None, token_file: Path | str | None = None) -> str | None:
    if token and token_file:
        raise AgentError("give --token or --token-file, not both")
    if token_file:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as exc:
            raise AgentError(f"token file {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise AgentError(f"token file {token_file} is empty")
    return token or None


def archive_bundle(bundle_dir: Path, fileobj: IO[bytes]) -> None:
    """Write ``bundle_dir``'s regular files into a gzip tar at the archive root (symlinks are not followed)."""
    with tarfile.open(fileobj=fileobj, mode="w:gz") as tar:
        for path in sorted(bundle_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=str(path.relative_to(bundle_dir)), recursive=False)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that checks the pin right after the handshake, before any request bytes."""

    pin: str = ""

    def connect(self) -> None:
        super().connect()
        try:
            check_pin(self.sock, self.pin)  # type: ignore[arg-type]
        except PinMismatch:
            self.sock.close()
            self.sock = None
            raise


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, pin: str) -> None:
        super().__init__(context=client_context())
        self._connection = type("PinnedConnection", (_PinnedHTTPSConnection,), {"pin": pin})

    def https_open(self, req: urllib.request.Request):
        return self.do_open(self._connection, req, context=self._context)


class AgentClient:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0, fingerprint: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AgentError(f"{url!r}: not an http(s) URL of an agent (e.g. https://pi.local:8765)")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.fingerprint = None
        if fingerprint:
            if parts.scheme != "https":
                raise AgentError(f"{self.url}: a fingerprint pins an https:// agent's certificate; this URL is plain http")
            try:
                self.fingerprint = normalize_fingerprint(fingerprint)
            except FingerprintError as exc:
                raise AgentError(f"{self.url}: {exc}") from None
        self._opener = urllib.request.build_opener(_PinnedHTTPSHandler(self.fingerprint)) if self.fingerprint else None

    # -- plumbing ---------------------------------------------------------------
    def _request(self, method: str, path: str, body: IO[bytes] | bytes | None = None,
                 headers: dict[str, str] | None = None, timeout_s: float | None = None) -> tuple[int, Any]:
        if self.url.startswith("https:") and self._opener is None:
            raise AgentError(f"{self.url}: no pinned certificate fingerprint for this agent; give --fingerprint (the "
                             "agent prints it at start) or add the device with `edgepack devices add NAME URL`")
        req = urllib.request.Request(self.url + API + path, data=body, method=method, headers=dict(headers or {}))
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        opener = self._opener or urllib.request.build_opener()
        try:
            with opener.open(req, timeout=timeout_s or self.timeout_s) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read() or b"{}").get("error") or exc.reason
            except (json.JSONDecodeError, AttributeError):
                reason = exc.reason
            if exc.code == 401:
                reason = "the agent rejected the token (401)" if self.token else "the agent needs a token (--token-file)"
            elif exc.code == 429:
                reason = f"{reason} (429)"
            raise AgentError(f"{self.url}: {reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", None) or exc
            if isinstance(why, PinMismatch):
                raise AgentError(f"{self.url}: refused: {why}; nothing was sent (if the agent was reinstalled, check "
                                 "the new fingerprint on the device and update devices.yaml)") from None
            if isinstance(why, ssl.SSLError):
                why = f"TLS: {why}; is it a plain-HTTP agent (--insecure-http)?"
            raise AgentError(f"{self.url}: cannot reach the agent ({why})") from None
        except json.JSONDecodeError:
            raise AgentError(f"{self.url}: the answer is not JSON (is this an edgepack agent?)") from None

    # -- API ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return self._request("GET", "/info")[1]

    def submit(self, bundle: Path | str, options: dict[str, Any] | None = None) -> str:
        """Upload a bundle folder or archive with benchmark options; returns the job id."""
        bundle = Path(bundle)
        headers = {OPTIONS_HEADER: json.dumps(options or {}), "Content-Type": "application/gzip"}
        with tempfile.TemporaryFile() as tmp:
            if bundle.is_dir():
                archive_bundle(bundle, tmp)
            elif bundle.is_file():
                with open(bundle, "rb") as src:
                    while block := src.read(1 << 20):
                        tmp.write(block)
            else:
                raise AgentError(f"{bundle}: no such bundle folder or archive")
            size = tmp.tell()
            limit_mb = (self.info().get("agent") or {}).get("max_upload_mb")
            if limit_mb and size > int(limit_mb) << 20:
                raise AgentError(f"{self.url}: bundle archive is {size / 2**20:.1f} MB, over the agent's limit of {limit_mb} MB (--max-upload-mb)")
            tmp.seek(0)
            headers["Content-Length"] = str(size)
            _, body = self._request("POST", "/jobs", body=tmp, headers=headers, timeout_s=max(self.timeout_s, 300.0))
        return str(body["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{quote(job_id)}")[1]

    def wait(self, job_id: str, progress: Progress | None = None, poll_s: float = 0.5,
             timeout_s: float | None = None) -> dict[str, Any]:
        """Poll until the job is done or failed; a dropped poll is retried, the job goes on regardless."""
        start = time.monotonic()
        failures = 0
        while True:
            try:
                state = self.status(job_id)
                failures = 0
            except AgentError:
                failures += 1
                if failures >= 10:
                    raise
                time.sleep(poll_s)
                continue
            p = state.get("progress") or {}
            if progress and p:
                progress(int(p.get("done", 0)), int(p.get("total", 0)), str(p.get("label", state["status"])))
            if state["status"] in FINAL_STATES:
                return state
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise AgentError(f"{self.url}: job {job_id} still {state['status']} after {timeout_s:g} s")
            time.sleep(poll_s)

    def report(self, job_id: str) -> BenchReport:
        return BenchReport.from_dict(self._request("GET", f"/jobs/{quote(job_id)}/report")[1])

    def bench(self, bundle: Path | str, options: dict[str, Any] | None = None, progress: Progress | None = None) -> BenchReport:
        job = self.submit(bundle, options)
        state = self.wait(job, progress)
        if state["status"] != "done":
            raise AgentError(f"{self.url}: job {job} failed: {state.get('error') or 'unknown error'}")
        return self.report(job)
