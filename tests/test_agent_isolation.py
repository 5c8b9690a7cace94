"""Isolation: runners that abort, segfault, hang or exhaust memory fail their row; the agent keeps serving.

``FaultRunner`` below is registered in the agent through the documented
``EDGEPACK_EXTRA_RUNNERS`` mechanism (this directory on ``PYTHONPATH``); the
artifact's content says how it misbehaves.
"""
from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import numpy as np
import pytest

from device_bench.manifest import InputSpec, Manifest, ModelInfo, TargetEntry, TensorSpec, sha256_file
from device_bench.runners.base import Runner
from test_device_bench_fixture import agent_client, running_agent, tiny_bundle_dir

FAULTS = ("abort", "segfault", "hang", "oom")


class FaultRunner(Runner):
    runtime = "fault"
    distributions = ("numpy",)  # always installed: the runtime counts as available

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(path, threads)
        self.behaviour = Path(path).read_text().strip()

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if self.behaviour == "abort":
            os.abort()
        if self.behaviour == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        if self.behaviour == "hang":
            time.sleep(3600)
        if self.behaviour == "oom":
            np.ones(8 << 30, dtype=np.uint8)  # 8 GiB, far past the worker's address-space limit
        return np.zeros((1, 4), dtype=np.float32)


def _fault_bundle(out: Path) -> Path:
    out.mkdir()
    rng = np.random.default_rng(0)
    np.savez(out / "samples.npz", input_ids=rng.integers(0, 100, (2, 8), dtype=np.int32),
             attention_mask=np.ones((2, 8), dtype=np.int32))
    targets = []
    for name in (*FAULTS, "ok"):
        f = out / f"{name}.fault"
        f.write_text(name)
        targets.append(TargetEntry(name=name, status="ok", runtime="fault", precision="fp32", file=f.name,
                                   sha256=sha256_file(f), size_bytes=f.stat().st_size))
    Manifest(created_at="2026-01-01T00:00:00+00:00", edgepack_version="0.1.0", tool_versions={},
             model=ModelInfo(source="fault-injection", architecture="none", model_type="none", num_parameters=0,
                             fp32_size_bytes=0),
             task="feature-extraction",
             input_spec=InputSpec(seq_len=8, inputs=[TensorSpec("input_ids", "int32", [1, 8]),
                                                     TensorSpec("attention_mask", "int32", [1, 8])],
                                  outputs=[TensorSpec("embedding", "float32", [1, 4])]),
             tokenizer=None, targets=targets).write(out)
    return out


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    root = tmp_path_factory.mktemp("isolation")
    env = {"EDGEPACK_EXTRA_RUNNERS": "fault=test_agent_isolation:FaultRunner",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}
    with running_agent(root / "wd", "--timeout", "4", "--memory-limit-mb", "1024", "--keep-jobs", "2",
                       env=env) as (url, proc):
        yield agent_client(url), proc, root


@pytest.mark.slow
def test_crashing_hanging_and_oom_runners_fail_their_row_only(agent, tmp_path, tmp_path_factory):
    client, proc, _ = agent
    bundle = _fault_bundle(tmp_path / "faults")
    report = client.bench(bundle, {"runs": 3, "min_seconds": 0.0, "warmup": 0, "threads": [1]})
    rows = {r.target: r for r in report.results}
    assert rows["ok"].status == "ok" and rows["ok"].runs == 3
    assert rows["abort"].status == "failed" and "SIGABRT" in rows["abort"].error
    assert rows["segfault"].status == "failed" and "SIGSEGV" in rows["segfault"].error
    assert rows["hang"].status == "failed" and "timed out after 4 s" in rows["hang"].error
    assert rows["oom"].status == "failed" and "out of memory (memory limit 1024 MB)" in rows["oom"].error
    assert proc.poll() is None
    # the next job, a real one, succeeds
    real = client.bench(tiny_bundle_dir(tmp_path_factory),
                        {"targets": ["tflite-fp32"], "runs": 5, "min_seconds": 0.0, "warmup": 1, "threads": [1]})
    assert real.results[0].status == "ok"
    assert client.info()["agent"]["jobs_pending"] == 0


@pytest.mark.slow
def test_finished_jobs_are_pruned_and_bundles_removed(agent, tmp_path):
    client, _, root = agent
    bundle = _fault_bundle(tmp_path / "ok-only")
    ids = [client.submit(bundle, {"targets": ["ok"], "runs": 1, "min_seconds": 0.0, "warmup": 0}) for _ in range(2)]
    for job_id in ids:
        assert client.wait(job_id, poll_s=0.1)["status"] == "done"
    jobs_dir = root / "wd" / "jobs"
    deadline = time.monotonic() + 5
    while len(list(jobs_dir.iterdir())) > 2 and time.monotonic() < deadline:  # pruning follows the last status update
        time.sleep(0.05)
    assert sorted(p.name for p in jobs_dir.iterdir()) == sorted(ids)  # the 2 jobs of the first test were pruned
    for job_id in ids:
        assert not (jobs_dir / job_id / "bundle").exists()  # artifacts are deleted once measured
        assert (jobs_dir / job_id / "report.json").is_file()


def test_job_ids_sort_in_submission_order(tmp_path):
    """Pruning keeps the newest jobs by id, so ids made in the same second must still sort in order."""
    from device_bench.jobs import JobStore

    store = JobStore(tmp_path, bench=lambda *a: None, keep=2)
    try:
        ids = [store.new_job_dir()[0] for _ in range(200)]
    finally:
        store.stop()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
