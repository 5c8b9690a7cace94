"""The `edgepack` CLI as a user runs it: a real subprocess, exit codes, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import TINY_SEQ_LEN

EDGEPACK = [sys.executable, "-m", "packager.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEPACK, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgepack: error: ") and fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model", "./no/such/model"], "no such directory"),
        (["--targets", "tflite-int8,warp-drive"], "unknown target 'warp-drive'"),
        (["--task", "translation"], "--task 'translation': unknown task"),
        (["--seq-len", "0"], "--seq-len 0"),
        (["--calib", "/no/such/texts.txt"], "--calib /no/such/texts.txt: cannot read"),
        (["--runtime", "tflite-int8"], "expected TARGET=SPEC"),
        (["--runtime", "tflite-int8=tflite-runtime>>2"], "not a requirement"),
        (["--runtime", "onnx-int8=onnxruntime>=1.17"], "that target is not being packed"),
        (["-O", "tflite-int8-full.io"], "expected TARGET.KEY=VALUE"),
        (["--targets", "tflite-int8-full", "-O", "tflite-int8-full.io=int4"], "tflite-int8-full.io: 'int4' is not one of"),
        (["--targets", "onnx-int8", "-O", "onnx-int8.per_chanel=false"], "onnx-int8.per_chanel: unknown option"),
        (["-O", "onnx-int8.per_channel=false"], "that target is not being packed"),
        (["--search", "4"], "--search needs --recipe"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_model_dir, args, fragment):
    if "--model" not in args:
        args = ["--model", str(tiny_model_dir), *args]
    proc = run("pack", *args, "-o", str(tmp_path / "out"))
    assert_one_line_error(proc, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_seq_len_beyond_the_model_and_non_empty_out(tmp_path, tiny_model_dir):
    assert_one_line_error(run("pack", "--model", str(tiny_model_dir), "--seq-len", "999", "-o", str(tmp_path / "o")),
                          "allows at most 128")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    assert_one_line_error(run("pack", "--model", str(tiny_model_dir), "-o", str(tmp_path / "taken")), "--force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_inspect_rejects_a_non_bundle(tmp_path):
    assert_one_line_error(run("inspect", str(tmp_path)), "not a bundle")


def test_targets_lists_the_registry():
    proc = run("targets", "--json")
    assert proc.returncode == 0, proc.stderr
    names = {row["name"] for row in json.loads(proc.stdout)}
    assert {"torchscript-mobile", "tflite-int8", "torchscript-mobile-fp32", "tflite-fp32"} <= names
    assert run("pack", "--list-targets").returncode == 0
    options = run("targets", "--options")
    assert options.returncode == 0 and "tflite-int8-full.io=float (float|int8)" in options.stdout, options.stdout


@pytest.mark.slow
def test_pack_json_archive_then_inspect_and_tamper(tmp_path, tiny_model_dir):
    calib = tmp_path / "calib.jsonl"
    calib.write_text("\n".join(json.dumps({"text": t}) for t in ["turn the lights off", "what is the weather", "play music"]))
    out = tmp_path / "bundle"
    proc = run("pack", "--model", str(tiny_model_dir), "--targets", "tflite-int8,torchscript-mobile",
               "--seq-len", str(TINY_SEQ_LEN), "--calib", str(calib), "-o", str(out), "--archive", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout)  # stdout is exactly the manifest: converter chatter stays off it
    assert [t["status"] for t in manifest["targets"]] == ["ok", "ok"]
    assert manifest["targets"][0]["parity"]["n_samples"] == 3
    with tarfile.open(tmp_path / "bundle.tar.gz") as tar:
        assert "manifest.json" in tar.getnames()

    inspected = run("inspect", str(out), "--json")
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["intact"] is True
    human = run("inspect", str(out))
    assert "tflite-int8" in human.stdout and "all files match" in human.stdout

    artifact = out / manifest["targets"][0]["file"]
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\0")
    tampered = run("inspect", str(out), "--json")
    assert tampered.returncode == 1
    assert any("sha256 mismatch" in p for p in json.loads(tampered.stdout)["problems"])


def test_check_answers_per_declared_runtime_from_the_bundle_files(tiny_bundle):
    """`edgepack check`: the pack-time checker on an existing bundle; exit 1 when one runtime cannot run it."""
    ok = run("check", str(tiny_bundle), "--runtime", "tflite-int8=ai-edge-litert>=2.3",
             "--runtime", "torchscript-mobile=torch>=2.13", "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    rows = json.loads(ok.stdout)
    assert [(r["target"], r["verdict"]) for r in rows] == [("tflite-int8", "compatible"),
                                                          ("torchscript-mobile", "compatible")]
    assert rows[0]["report"]["ops"] and rows[0]["report"]["kernels"]["signatures"]

    bad = run("check", str(tiny_bundle), "--runtime", "tflite-int8=tflite-runtime==2.14",
              "--runtime", "tflite-int8=ai-edge-litert>=2.3", "--runtime", "torchscript-mobile=torch==1.9")
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "tflite-int8 on tflite-runtime==2.14: INCOMPATIBLE" in bad.stdout
    assert "GATHER_ND version 5" in bad.stdout and "remedy: " in bad.stdout
    assert "tflite-int8 on ai-edge-litert>=2.3: compatible" in bad.stdout
    assert "torchscript-mobile on torch==1.9: INCOMPATIBLE" in bad.stdout and "_backport_for_mobile" in bad.stdout


@pytest.mark.parametrize("args, fragment", [
    (["--runtime", "warp-drive=x==1"], "has no warp-drive artifact"),
    (["--runtime", "tflite-int8=tensorflow==2.1"], "unknown runtime for tflite artifacts"),
    (["--runtime", "tflite-int8"], "expected TARGET=SPEC"),
])
def test_check_bad_input_is_one_line(tiny_bundle, args, fragment):
    assert_one_line_error(run("check", str(tiny_bundle), *args), fragment)


def test_check_needs_a_bundle(tmp_path):
    assert_one_line_error(run("check", str(tmp_path), "--runtime", "tflite-int8=ai-edge-litert>=2.3"),
                          "not a bundle folder")
