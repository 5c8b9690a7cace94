"""The pipeline's modules import one way: down the layers, no import cycles (lazy, in-function imports included),
no stage's package importing another's, and the device side never importing the packing side.

The graph and its checks are ``scripts/import_graph.py`` (which also prints it); these tests run it.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


graph_module = _script()


def test_no_import_cycles():
    assert graph_module.cycles(graph_module.graph()) == []


def test_cycle_detector_finds_a_cycle():
    assert graph_module.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_device_side_never_imports_the_packing_side():
    offenders = {name: sorted(m for m in deps if m.split(".")[0] in ("packager", "targets"))
                 for name, deps in graph_module.graph().items() if name.startswith("device_bench")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_import_runs_down_the_pipeline_layers():
    """`scripts/import_graph.py --check`: no import runs back up a layer, none closes a cycle (package
    ``__init__`` files counted), and no stage's package imports another stage's."""
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "none upward, no cycle, no stage importing another" in run.stdout


def test_the_layer_check_finds_an_upward_import_and_one_between_stages():
    fake = {"packager.errors": {"packager.cli.pack"}, "packager.cli.pack": set(),
            "packager.stages.prune.algorithm": {"packager.stages.distill.train"}, "packager.stages.distill.train": set()}
    assert graph_module.upward(fake) == [("packager.errors", "packager.cli.pack")]
    assert graph_module.across_units(fake) == [("packager.stages.prune.algorithm", "packager.stages.distill.train")]
