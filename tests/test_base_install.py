"""Every command that does not pack works on the base install: torch, transformers, the converters, onnxruntime
and matplotlib cannot be imported in these subprocesses (``tests/base_install/sitecustomize.py`` first on
PYTHONPATH hides them from imports, ``find_spec`` and ``importlib.metadata``, as on a device)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from packager.cli import COMMANDS
from test_device_bench_fixture import PINS, running_agent

BLOCKER = Path(__file__).resolve().parent / "base_install"
REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "litert_torch", "ai_edge_quantizer", "onnx", "onnxruntime", "executorch",
         "matplotlib", "datasets", "packager.pack", "packager.tasks", "packager.models")


def base_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(BLOCKER), str(REPO)])}


def edgepack(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packager.cli", *args], capture_output=True, text=True, timeout=600,
                          env=env or base_env(), input=stdin, cwd=REPO)


def one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("edgepack: error: ") and fragment in lines[0], lines[0]
    return lines[0]


def test_the_blocker_really_hides_the_pack_extra():
    code = ("import importlib.util, importlib.metadata as md, sys\n"
            "assert importlib.util.find_spec('torch') is None and importlib.util.find_spec('transformers') is None\n"
            "names = {(d.metadata['Name'] or '').lower() for d in md.distributions()}\n"
            "assert not names & {'torch', 'transformers', 'onnxruntime', 'matplotlib'}, names\n"
            "try:\n    import torch\nexcept ModuleNotFoundError as e:\n    print('blocked', e.name)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=base_env(), timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "blocked torch", proc.stderr


@pytest.mark.slow
def test_help_lists_every_command_and_each_command_has_help():
    top = edgepack("--help")
    assert top.returncode == 0, top.stderr
    for name in COMMANDS:
        assert f"  {name} " in top.stdout, name
    for name, spec in COMMANDS.items():
        proc = edgepack(name, "--help")
        if name == "recipe":  # its module needs torch at import: the command stands in with one line
            one_line_error(proc, "needs the pack extra (torch is not installed)")
            continue
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
        assert f"Usage: edgepack {name}" in proc.stdout, (name, proc.stdout)
    if importlib.util.find_spec("torch") is None:  # a real base install: the blocked run above is the whole story
        return
    full = subprocess.run([sys.executable, "-m", "packager.cli", "recipe", "--help"], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert full.returncode == 0 and "Usage: edgepack recipe" in full.stdout, full.stderr[-2000:]


def test_base_command_modules_import_nothing_heavy():
    """Light at import even where torch *is* installed: the base commands' modules never pull it in."""
    modules = sorted({spec.location.split(":")[0] for spec in COMMANDS.values() if spec.side == "base"})
    code = (f"import sys, importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            f"import device_bench.predict, device_bench.decoders, device_bench.tokenizer\n"
            f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)) or 'clean')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "clean"


def test_pack_side_commands_name_the_extra(tmp_path):
    one_line_error(edgepack("pack", "-o", str(tmp_path / "out")), "pip install 'edgepack[pack]'")
    one_line_error(edgepack("recipe", "show", "x.yaml"), "needs the pack extra")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_inspect_check_targets_report_on_the_base_install(tiny_bundle, tmp_path):
    inspected = edgepack("inspect", str(tiny_bundle))
    assert inspected.returncode == 0 and "all files match" in inspected.stdout, inspected.stderr[-2000:]

    checked = edgepack("check", str(tiny_bundle), "--runtime", "tflite-int8=ai-edge-litert>=2.3",
                       "--runtime", "torchscript-mobile=torch==1.9", "--json")
    assert checked.returncode == 1, checked.stderr[-2000:]  # the .ptl's bytecode is read without torch
    verdicts = {(r["target"], r["verdict"]) for r in json.loads(checked.stdout)}
    assert verdicts == {("tflite-int8", "compatible"), ("torchscript-mobile", "INCOMPATIBLE")}

    listed = edgepack("targets", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["torchscript-mobile"]["available"] is False and "torch" in rows["torchscript-mobile"]["missing"]

    table = edgepack("report", str(tiny_bundle))
    assert table.returncode == 0 and "| tiny-bundle | tflite-int8 |" in table.stdout, table.stderr[-2000:]
    one_line_error(edgepack("report", str(tiny_bundle), "--plot", str(tmp_path / "p.png")), "--plot needs matplotlib")
    assert not (tmp_path / "p.png").exists()


@pytest.mark.slow
def test_bench_local_and_through_an_agent_on_the_base_install(tiny_bundle, tmp_path):
    local = edgepack("bench", str(tiny_bundle), "--runs", "2", "--min-seconds", "0", "--warmup", "0", "--json")
    assert local.returncode == 0, local.stderr[-2000:]
    rows = {r["target"]: r for r in json.loads(local.stdout)["results"]}
    assert rows["tflite-int8"]["status"] == rows["tflite-fp32"]["status"] == "ok"
    assert rows["torchscript-mobile"]["status"] == "skipped" and "not installed" in rows["torchscript-mobile"]["error"]

    with running_agent(tmp_path / "agent", env=base_env()) as (url, _proc):
        info = edgepack("agent", "info", "--json")
        assert info.returncode == 0 and json.loads(info.stdout)["runtimes"]["torch-lite"] is None, info.stderr
        remote = edgepack("bench", str(tiny_bundle), "--device", url, "--fingerprint", PINS[url], "--targets", "tflite-int8", "--runs", "2",
                          "--min-seconds", "0", "--warmup", "0", "--json")
        assert remote.returncode == 0, remote.stderr[-2000:]
        assert [r["status"] for r in json.loads(remote.stdout)["results"]] == ["ok"]
        devices = tmp_path / "devices.yaml"
        devices.write_text(f"devices:\n  - name: loop\n    url: {url}\n    fingerprint: '{PINS[url]}'\n")
        fleet = edgepack("devices", "check", str(devices), "--json")
        assert fleet.returncode == 0 and json.loads(fleet.stdout)[0]["reachable"] is True, fleet.stderr[-2000:]


def test_run_on_the_base_install(tiny_bundle):
    proc = edgepack("run", str(tiny_bundle), "Which museums are open late?", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    # the fastest of the .tflite ones (measured here): the .ptl targets come first in the bundle but need torch
    assert doc["target"] in ("tflite-int8", "tflite-fp32") and doc["choice"]["how"] in ("probe", "profile")
    assert {s["target"] for s in doc["choice"]["profile"]["speeds"]} == {"tflite-int8", "tflite-fp32"}
    ordered = edgepack("run", str(tiny_bundle), "Which museums are open late?", "--json", "--choose", "order")
    assert json.loads(ordered.stdout)["target"] == "tflite-int8"  # the fixed order: parity, torch-free, pack order
    assert len(doc["results"]) == 1 and len(doc["results"][0]["embedding"]) == 64
    one_line_error(edgepack("run", str(tiny_bundle), "hello", "--target", "torchscript-mobile"),
                   "runtime 'torch-lite' is not installed here")
    no_tokenizers = {**base_env(), "EDGEPACK_TEST_BLOCK": "tokenizers"}
    one_line_error(edgepack("run", str(tiny_bundle), "hello", env=no_tokenizers), "needs the tokenizers package")
