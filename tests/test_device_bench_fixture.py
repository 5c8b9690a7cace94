"""Helpers for the device_bench tests: the shared tiny bundle and an agent on loopback.

``tiny_bundle_dir`` is conftest's session bundle (a random tiny BERT packed by the
real packer); the test below checks it is a valid, intact bundle.
"""
from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from conftest import TINY_SAMPLES, TINY_SEQ_LEN, shared_tiny_bundle
from device_bench.manifest import Manifest, verify_files

SEQ_LEN = TINY_SEQ_LEN
N_SAMPLES = TINY_SAMPLES
HIDDEN = 64


def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's shared tiny bundle (conftest), packed by the real packer. Copy it before modifying it."""
    return shared_tiny_bundle(tmp_path_factory)


@contextlib.contextmanager
def running_agent(workdir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``edgepack-agent serve`` in a subprocess on 127.0.0.1 with a free port; yields (url, process)."""
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
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=0.5):
                line = proc.stdout.readline()
                break
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"agent did not start: {line!r} {log_path.read_text()[-2000:]}")
        yield match.group(1), proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_tiny_bundle_is_valid_and_intact(tmp_path_factory):
    bundle = tiny_bundle_dir(tmp_path_factory)
    manifest = Manifest.load(bundle)
    assert verify_files(bundle, manifest) == []
    with np.load(bundle / manifest.samples) as data:
        assert data["input_ids"].shape == (N_SAMPLES, SEQ_LEN) and data["input_ids"].dtype == np.int32
    assert {t.runtime for t in manifest.runnable_targets()} == {"tflite", "torch-lite"}
