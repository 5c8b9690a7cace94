"""The agent's token and what a wrong one costs: re-read on rotation, throttled per address.

``TokenSource``: the token the agent checks, read from ``--token-file`` and read
again whenever the file changes (``edgepack agent token rotate`` replaces it
atomically), so a rotation takes effect on the next request and the old token
stops working, without a restart. A token file that disappears or is emptied
fails closed: no token is accepted until it is back.

``AuthThrottle``: per source address (an IPv6 address counts by its /64), the
wrong credentials presented within ``window_s``. The first ``free_failures``
cost nothing more than the 401; every one after that locks the address out for
``base_lock_s`` doubled each time, up to ``max_lock_s``. While locked, every
request from that address is answered 429 with ``Retry-After``, before its
token is looked at (so a right token from it waits too; another address is
unaffected). At most ``max_addresses`` are tracked (least recently failing
evicted first), so the bookkeeping is bounded whatever the number of callers.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .fstree import write_private

log = logging.getLogger("edgepack.agent")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def rotate_token(path: Path) -> str:
    """Write a fresh token to ``path`` (0600, atomically) and return it."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    write_private(path, (token + "\n").encode())
    return token


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time comparison (of the UTF-8 bytes; undecodable input compares unequal, in the same time)."""
    return hmac.compare_digest(given.encode("utf-8", errors="replace"), expected.encode("utf-8"))


class TokenSource:
    """The current token: fixed (``--token``), or the contents of a file, re-read when the file changes."""

    def __init__(self, token: str | None = None, path: Path | None = None) -> None:
        self._token = token
        self._path = Path(path).expanduser() if path else None
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        if self._path is not None:
            self.current()

    @property
    def required(self) -> bool:
        return bool(self._token) or self._path is not None

    def current(self) -> str | None:
        """The token to check now (``None`` with a file: none is accepted until the file holds one)."""
        if self._path is None:
            return self._token
        try:
            st = os.stat(self._path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                old = self._token
                try:
                    self._token = self._path.read_text().strip() or None if stamp else None
                except OSError:
                    self._token = None
                if self._token is None:
                    log.warning("token file %s is missing or empty: every request is refused until it holds a token", self._path)
                elif old is not None and self._token != old:
                    log.warning("token file %s changed: the new token is in force, the old one no longer works", self._path)
            return self._token

    def check(self, given: str) -> bool:
        token = self.current()
        if token is None:
            tokens_equal(given, "-" * 43)  # the same work either way
            return False
        return tokens_equal(given, token)


@dataclass
class _Record:
    failures: int = 0
    first_at: float = 0.0
    locked_until: float = 0.0


class AuthThrottle:
    def __init__(self, free_failures: int = 10, window_s: float = 600.0, base_lock_s: float = 1.0,
                 max_lock_s: float = 900.0, max_addresses: int = 4096, clock=time.monotonic) -> None:
        self.free_failures, self.window_s = free_failures, window_s
        self.base_lock_s, self.max_lock_s = base_lock_s, max_lock_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(address: str) -> str:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return address
        if ip.version == 6:
            if ip.ipv4_mapped:
                return str(ip.ipv4_mapped)
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)

    def __len__(self) -> int:
        return len(self._records)

    def retry_after(self, address: str) -> float:
        """Seconds this address is still locked out (0: it may try)."""
        with self._lock:
            rec = self._records.get(self.key(address))
            return max(0.0, rec.locked_until - self._clock()) if rec else 0.0

    def failed(self, address: str) -> float:
        """Count a wrong credential; returns the lockout it starts (0 while still within the free failures)."""
        now = self._clock()
        key = self.key(address)
        with self._lock:
            rec = self._records.pop(key, None)
            if rec is None or (now - rec.first_at > self.window_s and rec.locked_until <= now):
                rec = _Record(first_at=now)
            self._records[key] = rec  # most recent last
            while len(self._records) > self.max_addresses:
                self._records.popitem(last=False)
            rec.failures += 1
            over = rec.failures - self.free_failures
            if over <= 0:
                return 0.0
            lock = min(self.max_lock_s, self.base_lock_s * 2 ** min(over - 1, 62))
            rec.locked_until = now + lock
            return lock

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._records.pop(self.key(address), None)
