"""A tiny real bundle for the device_bench tests (TFLite fp32 + TorchScript-Lite fp32 of a random BERT).

``tiny_bundle_dir`` builds it once per test session (conversion takes ~15 s)
and caches it under pytest's base temp dir; other test modules import it.
The test below checks the fixture itself is a valid, intact bundle.
"""
from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from device_bench.manifest import (
    InputSpec,
    Manifest,
    ModelInfo,
    TargetEntry,
    TensorSpec,
    sha256_file,
    verify_files,
)

SEQ_LEN = 16
N_SAMPLES = 6
HIDDEN = 64


def _wrapper():
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, attn_implementation="eager")
    model = BertModel(config).eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            hidden = self.m(input_ids=input_ids.long(), attention_mask=attention_mask.long()).last_hidden_state
            mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return MeanPooled(model).eval(), model


def _samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, size=(N_SAMPLES, SEQ_LEN), dtype=np.int32)
    mask = np.ones_like(ids)
    for i in range(N_SAMPLES):  # real tokenized texts have varied lengths, right-padded
        length = SEQ_LEN - 2 * i
        ids[i, length:] = 0
        mask[i, length:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _entry(name: str, runtime: str, path: Path) -> TargetEntry:
    return TargetEntry(name=name, status="ok", runtime=runtime, precision="fp32", file=path.name,
                       sha256=sha256_file(path), size_bytes=path.stat().st_size)


def build_tiny_bundle(out: Path) -> Path:
    import torch
    import litert_torch

    wrapper, model = _wrapper()
    samples = _samples()
    example = tuple(torch.from_numpy(samples[n][:1]) for n in ("input_ids", "attention_mask"))
    out.mkdir(parents=True, exist_ok=True)
    litert_torch.convert(wrapper, example).export(str(out / "model.tflite"))
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False, strict=False)
        traced._save_for_lite_interpreter(str(out / "model.ptl"))
    np.savez(out / "samples.npz", **samples)
    (out / "samples.txt").write_text("\n".join(f"sample {i}" for i in range(N_SAMPLES)) + "\n")
    manifest = Manifest(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        edgepack_version="0.1.0",
        tool_versions={"torch": torch.__version__},
        model=ModelInfo(source="random-tiny-bert", architecture="BertModel", model_type="bert",
                        num_parameters=sum(p.numel() for p in model.parameters()), fp32_size_bytes=0,
                        num_layers=2, hidden_size=HIDDEN, vocab_size=1000),
        task="feature-extraction",
        input_spec=InputSpec(seq_len=SEQ_LEN,
                             inputs=[TensorSpec("input_ids", "int32", [1, SEQ_LEN]),
                                     TensorSpec("attention_mask", "int32", [1, SEQ_LEN])],
                             outputs=[TensorSpec("embedding", "float32", [1, HIDDEN])],
                             pooling="mean", normalize=True),
        tokenizer=None,
        targets=[_entry("tflite-fp32", "tflite", out / "model.tflite"),
                 _entry("torchscript-mobile-fp32", "torch-lite", out / "model.ptl")],
    )
    manifest.write(out)
    return out


def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's shared tiny bundle (built on first use). Tests must copy it before modifying it."""
    path = tmp_path_factory.getbasetemp() / "device_bench_tiny_bundle"
    if not (path / "manifest.json").is_file():
        staging = path.with_name(path.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        build_tiny_bundle(staging)
        staging.rename(path)
    return path


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
