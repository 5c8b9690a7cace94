"""Parity on the device's own kernels: the bundle carries its parity inputs and fp32 outputs, and `edgepack check
--on-device` and every bench recompute the pack's gates there, torch-free, per target and length.

A device whose kernels compute something else is simulated by a bundle whose recorded fp32 outputs disagree with
what every artifact computes (the reference rows rotated): the same check must flag it, in the table, in --json
and by exit 1 with --strict.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_bench.bench import bench_bundle, check_parity_here
from device_bench.manifest import Manifest, sha256_file
from device_bench.parity import PARITY_NAME, load_parity_inputs
from test_device_bench_fixture import tiny_bundle_dir

FAST = dict(runs=3, min_seconds=0.0, warmup=1, threads=[1])
BASE_TARGETS = ["tflite-int8", "tflite-fp32"]  # the runtime every install has


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return tiny_bundle_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def disagreeing(bundle, tmp_path_factory) -> Path:
    """The bundle with its fp32 reference outputs rotated by one row: no artifact can agree with them."""
    copy = tmp_path_factory.mktemp("disagreeing") / "bundle"
    shutil.copytree(bundle, copy)
    manifest = Manifest.load(copy)
    arrays = dict(np.load(copy / PARITY_NAME))
    for key in [k for k in arrays if k.endswith(".reference")]:
        arrays[key] = np.roll(arrays[key], 1, axis=0)
    with open(copy / PARITY_NAME, "wb") as f:
        np.savez_compressed(f, **arrays)
    manifest.parity_inputs.sha256 = sha256_file(copy / PARITY_NAME)
    manifest.write(copy)
    return copy


def edgepack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", *args], capture_output=True, text=True, timeout=600)


def test_the_bundle_carries_every_gated_group_with_its_fp32_outputs(bundle):
    manifest = Manifest.load(bundle)
    groups = load_parity_inputs(bundle, manifest)
    assert [g.length for g, _, _ in groups][0] is None  # the calibration rows first
    assert {g.length for g, _, _ in groups if g.gates} - {None} == set(manifest.input_spec.buckets)
    for group, inputs, reference in groups:
        assert group.rows == len(reference) == len(inputs["input_ids"]) > 0
        assert reference.dtype == np.float32 and inputs["input_ids"].shape[1] == manifest.input_spec.seq_len


@pytest.mark.slow
def test_bench_recomputes_the_pack_gates_on_this_device(bundle):
    report = bench_bundle(bundle, targets=BASE_TARGETS, **FAST)
    manifest = Manifest.load(bundle)
    for result in report.results:
        parity = result.device_parity
        assert parity is not None and parity.passed and parity.error is None, parity
        entry = manifest.target(result.target)
        assert parity.thresholds == entry.parity.thresholds and parity.n_samples == min(entry.parity.n_samples, 64)
        # the same kernels as at pack time (this host packed it): the same figure
        assert parity.metrics["mean_cosine"] == pytest.approx(parity.pack_metrics["mean_cosine"], abs=1e-4)
        assert {r.length for r in parity.by_length} == {r.length for r in entry.parity_by_length}
    assert "parity" in report.protocol


@pytest.mark.slow
def test_a_device_that_disagrees_is_flagged_in_the_table_json_and_strict_exit(disagreeing, tmp_path):
    report = bench_bundle(disagreeing, targets=["tflite-int8"], **FAST)
    (result,) = report.results
    assert result.status == "ok" and not result.device_parity.passed
    assert result.device_parity.shortfalls[0].startswith("mean_cosine=")
    assert any(s.startswith("length 16: mean_cosine=") for s in result.device_parity.shortfalls)
    assert report.below_parity == [result]

    out = tmp_path / "report.json"
    args = ["bench", str(disagreeing), "--targets", "tflite-int8", "--runs", "3", "--min-seconds", "0", "--warmup", "1",
            "--threads", "1"]
    plain = edgepack(*args, "--out", str(out))
    assert plain.returncode == 0, plain.stderr[-2000:]  # flagged, but a bench is not a gate unless asked
    assert "BELOW GATE" in plain.stdout and "below its parity gate on this device" in plain.stdout
    assert json.loads(out.read_text())["results"][0]["device_parity"]["passed"] is False
    strict = edgepack(*args, "--strict", "--json")
    assert strict.returncode == 1, strict.stderr[-2000:]
    assert json.loads(strict.stdout)["results"][0]["device_parity"]["passed"] is False


@pytest.mark.slow
def test_check_on_device_reports_per_target_and_length(bundle, disagreeing):
    good = edgepack("check", str(bundle), "--on-device", "--targets", ",".join(BASE_TARGETS), "--strict", "--json")
    assert good.returncode == 0, good.stderr[-2000:]
    doc = json.loads(good.stdout)
    assert doc["fingerprint"]["isa"] is not None and doc["fingerprint"]["runtimes"]["tflite"]
    assert [r["target"] for r in doc["results"]] == BASE_TARGETS
    assert all(r["device_parity"]["passed"] and r["device_parity"]["by_length"] for r in doc["results"])

    bad = edgepack("check", str(disagreeing), "--on-device", "--targets", "tflite-int8", "--strict")
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "tflite-int8: BELOW GATE" in bad.stdout and "length 16: below" in bad.stdout
    assert edgepack("check", str(disagreeing), "--on-device", "--targets", "tflite-int8").returncode == 0


def test_altered_parity_inputs_and_old_bundles_say_why(bundle, tmp_path):
    altered = tmp_path / "altered"
    shutil.copytree(bundle, altered)
    with open(altered / PARITY_NAME, "ab") as f:
        f.write(b"\0")
    (row,) = check_parity_here(altered, ["tflite-int8"]).results
    assert not row.device_parity.passed and "sha256 mismatch for parity.npz" in row.device_parity.error

    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    manifest = Manifest.load(old)
    manifest.parity_inputs = None
    manifest.write(old)
    (old / PARITY_NAME).unlink()
    (result,) = bench_bundle(old, targets=["tflite-int8"], **FAST).results
    assert result.status == "ok" and result.device_parity is None  # nothing to check against: not a failure
    proc = edgepack("check", str(old), "--on-device")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "carries no parity inputs" in lines[0], proc.stderr
