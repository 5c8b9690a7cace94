"""Helpers for the device_bench tests: the shared tiny bundle and an agent on loopback.

``tiny_bundle_dir`` is conftest's session bundle (a random tiny BERT packed by the
real packer); the test below checks it is a valid, intact bundle.

``running_agent`` starts the agent as a user would, so over HTTPS with its own
certificate unless ``--insecure-http`` is passed; the fingerprint it prints is
kept in ``PINS`` (by URL), and ``agent_client``, ``connect`` and
``http_connection`` talk to it pinned, as the host does.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import re
import selectors
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np
import pytest

from conftest import TINY_SAMPLES, TINY_SEQ_LEN, shared_tiny_bundle
from device_bench.client import AgentClient
from device_bench.manifest import Manifest, verify_files
from device_bench.tls import check_pin, client_context

SEQ_LEN = TINY_SEQ_LEN
N_SAMPLES = TINY_SAMPLES
HIDDEN = 64


def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's shared tiny bundle (conftest), packed by the real packer. Copy it before modifying it."""
    return shared_tiny_bundle(tmp_path_factory)


@contextlib.contextmanager
def running_agent(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``edgepack-agent serve`` in a subprocess on 127.0.0.1 with a free port; yields (url, process).

    HTTPS unless ``--insecure-http`` is among ``args``; the certificate's fingerprint is then ``PINS[url]``."""
    cmd = [sys.executable, "-m", "device_bench.cli", "serve", "--host", "127.0.0.1", "--port", "0",
           "--workdir", str(workdir), "--idle-seconds", "0.2", *args]
    full_env = {**os.environ, **(env or {})}
    log_path = workdir.with_name(workdir.name + ".agent.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=full_env)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        line, pin = "", None
        while time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=0.5):
                line = proc.stdout.readline()
                found = re.search(r"fingerprint: ([0-9A-F:]{95})", line)
                if found:  # the listening line follows at once (it may be in the pipe's buffer already)
                    pin = found.group(1)
                    line = proc.stdout.readline()
                break
        match = re.search(r"listening on (https?://\S+)", line)
        if not match:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"agent did not start: {line!r} {log_path.read_text()[-2000:]}")
        url = match.group(1)
        assert (pin is not None) == url.startswith("https://"), line
        if pin:
            PINS[url] = pin
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


#: the certificate fingerprint each running agent printed, by URL
PINS: dict[str, str] = {}


def agent_client(url: str, token: str | None = None, **kwargs) -> AgentClient:
    """The host's client of a test agent, pinned to the fingerprint it printed."""
    return AgentClient(url, token, fingerprint=PINS.get(url) if url.startswith("https:") else None, **kwargs)


def _tcp(url: str, timeout: float, source: str | None) -> socket.socket:
    """A TCP connection to the agent of ``url`` from ``source`` (a loopback address: another caller)."""
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def connect(url: str, timeout: float = 30, source: str | None = None, pin: str | None = None) -> socket.socket:
    """A connected socket to the agent (TLS, pin checked, when the URL is https), from ``source`` (a loopback address)."""
    parts = urlsplit(url)
    raw = _tcp(url, timeout, source)
    if parts.scheme != "https":
        return raw
    try:
        tls = client_context().wrap_socket(raw, server_hostname=parts.hostname)
        check_pin(tls, pin or PINS[url])
    except BaseException:
        raw.close()
        raise
    return tls


class TLSStream:
    """A pinned TLS connection on memory buffers, for tests that send raw bytes and half-close.

    ``ssl.SSLSocket.unwrap`` sends close_notify and then insists on reading the agent's, failing (and losing the
    answer) when the answer comes first; here close_notify is sent alone, and the answer is read after it.
    """

    def __init__(self, raw: socket.socket, hostname: str, pin: str) -> None:
        self.raw = raw
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = client_context().wrap_bio(self._in, self._out, server_hostname=hostname)
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = raw.recv(1 << 16)
                if not data:
                    raise ConnectionError("the agent closed the connection during the TLS handshake") from None
                self._in.write(data)
        self._flush()
        check_pin(self._tls, pin)  # type: ignore[arg-type]

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self.raw.sendall(data)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(view), 1 << 14):
            self._tls.write(view[i:i + (1 << 14)])
            self._flush()

    def shutdown_write(self) -> None:
        try:
            self._tls.unwrap()  # close_notify out; the agent's is not awaited
        except ssl.SSLWantReadError:
            pass
        self._flush()
        self.raw.shutdown(socket.SHUT_WR)

    def recv(self, n: int) -> bytes:
        while True:
            try:
                return self._tls.read(n)
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLWantReadError:
                data = self.raw.recv(1 << 16)
                if not data:
                    return b""  # closed without close_notify: the answer is complete (Content-Length)
                self._in.write(data)

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> TLSStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_connect(url: str, timeout: float = 30, source: str | None = None) -> socket.socket | TLSStream:
    """A connection to send raw request bytes on: a socket, or a pinned ``TLSStream`` for an https URL."""
    parts = urlsplit(url)
    raw = _tcp(url, timeout, source)
    if parts.scheme != "https":
        return raw
    try:
        return TLSStream(raw, parts.hostname, PINS[url])
    except BaseException:
        raw.close()
        raise


def half_close(sock: socket.socket | TLSStream) -> None:
    """No more to send (TCP FIN; over TLS a close_notify first); the answer can still be read."""
    if isinstance(sock, TLSStream):
        sock.shutdown_write()
    else:
        sock.shutdown(socket.SHUT_WR)


class _Connected(http.client.HTTPConnection):
    def __init__(self, url: str, timeout: float, source: str | None) -> None:
        parts = urlsplit(url)
        super().__init__(parts.hostname, parts.port, timeout=timeout)
        self._url, self._source = url, source

    def connect(self) -> None:
        self.sock = connect(self._url, self.timeout, self._source)


def http_connection(url: str, timeout: float = 30, source: str | None = None) -> http.client.HTTPConnection:
    """``http.client`` to the agent over ``connect`` (pinned TLS for an https URL)."""
    return _Connected(url, timeout, source)


def test_tiny_bundle_is_valid_and_intact(tmp_path_factory):
    bundle = tiny_bundle_dir(tmp_path_factory)
    manifest = Manifest.load(bundle)
    assert verify_files(bundle, manifest) == []
    with np.load(bundle / manifest.samples) as data:
        assert data["input_ids"].shape == (N_SAMPLES, SEQ_LEN) and data["input_ids"].dtype == np.int32
    assert {t.runtime for t in manifest.runnable_targets()} == {"tflite", "torch-lite"}
