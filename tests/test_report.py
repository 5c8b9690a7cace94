"""`edgepack report`: a real bundle joined with a real local bench report, as table, JSON and plot."""
from __future__ import annotations

import json

import pytest

from conftest import TINY_TARGETS
from device_bench.bench import bench_bundle
from test_cli import assert_one_line_error, run


@pytest.mark.slow
def test_report_joins_bundle_and_bench(tmp_path, tiny_bundle):
    report = bench_bundle(tiny_bundle, runs=5, min_seconds=0.0, warmup=1)
    report_path = tmp_path / "bench.json"
    report_path.write_text(report.to_json())
    png, md = tmp_path / "tradeoff.png", tmp_path / "table.md"
    proc = run("report", str(tiny_bundle), str(report_path), "--plot", str(png), "--markdown", str(md), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    rows = {r["target"]: r for r in doc["points"]}
    assert {s["label"].split(" (")[0] for s in doc["latency_vs_length"]} == set(TINY_TARGETS)
    assert set(rows) == set(TINY_TARGETS)
    for row in rows.values():
        assert row["stage"] == tiny_bundle.name
        assert row["p50_ms"] > 0 and row["size_mb"] > 0 and row["mean_cosine"] >= 0.99
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = md.read_text()
    rows_table = table.split("\n\n")[0]
    assert len(rows_table.strip().splitlines()) == 2 + len(TINY_TARGETS) and "tflite-int8" in rows_table


def test_report_errors(tmp_path):
    assert_one_line_error(run("report", str(tmp_path / "nope.json")), "no such bundle folder or report file")
    bogus = tmp_path / "bogus.json"
    bogus.write_text("{}")
    assert_one_line_error(run("report", str(bogus)), "not a bench report")
