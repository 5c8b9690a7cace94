"""The local benchmark engine on a tiny real bundle: worker subprocesses, stats, skips, integrity, CLI."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from device_bench.bench import BenchError, bench_bundle
from device_bench.host_cli import bench as bench_cmd
from device_bench.manifest import Manifest, TargetEntry
from device_bench.report import BenchReport, render_table
from device_bench.worker import MemoryResult, WorkerError, decode_output
from test_device_bench_fixture import HIDDEN, tiny_bundle_dir

FAST = dict(runs=12, min_seconds=0.0, warmup=2)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def tflite_report(bundle):
    ballast = np.ones(256 << 20, dtype=np.uint8)  # a big parent must not inflate the worker's peak RSS
    report = bench_bundle(bundle, targets=["tflite-fp32"], threads=[1], **FAST)
    del ballast
    return report


def test_timing_memory_and_energy_fields(tflite_report):
    (r,) = tflite_report.results
    assert r.status == "ok", r.error
    assert r.runs == 12 and len(r.raw_ms) == 12 and r.warmup_runs == 2
    lat = r.latency_ms
    assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p99 <= lat.max
    assert lat.min == pytest.approx(min(r.raw_ms), abs=1e-3) and lat.max == pytest.approx(max(r.raw_ms), abs=1e-3)
    assert r.throughput_ips == pytest.approx(r.runs / r.timed_s)
    assert r.load_cold_ms > 0 and r.load_warm_ms > 0 and r.first_inference_ms > 0
    assert r.output_shape == [1, HIDDEN]
    assert r.affinity and len(r.affinity) == 1  # threads=1 pinned to one CPU
    assert 0 < r.cpu_util < 1.6
    assert r.rss_after_load_mb > 10 and r.rss_after_load_mb <= r.peak_rss_mb < 200
    assert r.energy.kind == "estimated" and r.energy.mj_per_inference > r.energy.mj_above_idle_per_inference > 0
    assert tflite_report.protocol["options"]["runs"] == 12
    assert tflite_report.fingerprint["runtimes"]["tflite"].startswith("ai-edge-litert==")


def test_min_seconds_extends_the_run(bundle):
    report = bench_bundle(bundle, targets=["tflite-fp32"], threads=[1], runs=1, min_seconds=0.3, warmup=0)
    (r,) = report.results
    assert r.timed_s >= 0.3 and r.runs > 1 and len(r.raw_ms) == r.runs


def test_report_round_trip_and_table(tflite_report):
    again = BenchReport.from_dict(json.loads(tflite_report.to_json()))
    assert again == tflite_report
    console = Console(width=200, record=True)
    console.print(render_table(again))
    text = console.export_text()
    assert "tflite-fp32" in text and "(est)" in text


@pytest.mark.slow
def test_missing_runtime_skipped_and_corrupt_artifact_failed(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = Manifest.load(copy)
    tfl = manifest.target("tflite-fp32")
    manifest.targets.append(TargetEntry(name="needs-other-runtime", status="ok", runtime="no-such-runtime",
                                        file=tfl.file, sha256=tfl.sha256, size_bytes=tfl.size_bytes))
    manifest.write(copy)
    with open(copy / Manifest.load(copy).target("tflite-int8").file, "r+b") as f:  # flip a byte: sha256 no longer matches
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    report = bench_bundle(copy, threads=[1], **FAST)
    by_name = {r.target: r for r in report.results}
    assert by_name["tflite-fp32"].status == "ok"
    assert by_name["tflite-int8"].status == "failed"  # a runtime every install has: checked, not skipped
    assert "sha256 mismatch" in by_name["tflite-int8"].error
    assert by_name["needs-other-runtime"].status == "skipped"
    assert "unknown runtime" in by_name["needs-other-runtime"].error


def test_bad_requests_are_one_line_errors(bundle, tmp_path):
    with pytest.raises(BenchError, match="not a bundle"):
        bench_bundle(tmp_path, **FAST)
    with pytest.raises(BenchError, match="not in this bundle"):
        bench_bundle(bundle, targets=["nope"], **FAST)
    with pytest.raises(BenchError, match="--threads"):
        bench_bundle(bundle, threads=[0], **FAST)


def test_worker_prints_exactly_one_json_object(bundle):
    args = {"mode": "memory", "runtime": "tflite", "artifact": str(bundle / Manifest.load(bundle).target("tflite-fp32").file),
            "samples": str(bundle / "samples.npz"), "input_names": ["input_ids", "attention_mask"], "memory_runs": 2}
    proc = subprocess.run([sys.executable, "-m", "device_bench.worker", json.dumps(args)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    result = decode_output(line, "memory")  # a typed record, not a dict
    assert isinstance(result, MemoryResult) and result.peak_rss_mb >= result.rss_after_load_mb > result.rss_before_load_mb
    bad = subprocess.run([sys.executable, "-m", "device_bench.worker", "{not json"], capture_output=True, text=True, timeout=60)
    error = decode_output(bad.stdout, "memory")
    assert bad.returncode != 0 and isinstance(error, WorkerError) and "bad worker arguments" in error.error


def test_cli_json_and_errors(bundle, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.json"
    res = runner.invoke(bench_cmd, [str(bundle), "--targets", "tflite-fp32", "--threads", "1", "--runs", "5",
                                    "--min-seconds", "0", "--warmup", "1", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == 1 and doc["results"][0]["target"] == "tflite-fp32"
    assert json.loads(out.read_text())["results"][0]["runs"] == 5
    res = runner.invoke(bench_cmd, [str(tmp_path), "--runs", "5"])
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0 and "not a bundle" in res.stderr
    res = runner.invoke(bench_cmd, [str(bundle), "--threads", "1,x"])
    assert res.exit_code == 2 and "--threads" in res.stderr


def test_extra_runners_from_the_environment():
    from device_bench.extra_runners import ExtraRunnerError, parse_extra_runners

    assert parse_extra_runners("a=pkg.mod:Cls, b=m:K") == {"a": "pkg.mod:Cls", "b": "m:K"}
    assert parse_extra_runners("") == {}
    with pytest.raises(ExtraRunnerError, match="built-in"):
        parse_extra_runners("tflite=evil:Runner")
    with pytest.raises(ExtraRunnerError, match="not key=module:Class"):
        parse_extra_runners("x=import os")


def test_rows_give_macs_per_inference_and_achieved_gmacs(bundle, tflite_report):
    """The manifest's MACs formula (counted at pack time) turns each row's p50 into achieved GMAC/s."""
    macs = Manifest.load(bundle).model.macs
    assert macs is not None and macs.per_token > 0 and macs.per_token_pair > 0
    (r,) = tflite_report.results
    assert r.macs_per_inference == macs.at(r.input_lengths.mean)
    assert r.gmac_per_s == pytest.approx(r.macs_per_inference / (r.latency_ms.p50 * 1e6), abs=0.01)
    assert r.by_length and all(row.macs == macs.at(row.padded_to or row.length) and row.gmac_per_s > 0
                               for row in r.by_length)
    assert BenchReport.from_dict(json.loads(tflite_report.to_json())).results[0].gmac_per_s == r.gmac_per_s
