"""The pipeline's modules import one way: no import cycles, lazy (in-function) imports included,
and the device side never imports the packing side."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("packager", "targets", "device_bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every project module ``path`` imports, anywhere in the file (a package's ``__init__`` excluded as target)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = {(_module_name(p)): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # keep only edges to real modules (``from x import name`` also yields ``x.name``), and skip packages'
        # ``__init__`` as an edge target: importing ``a.b`` runs ``a/__init__`` but does not depend on it
        graph[name] = {m for m in _imports(path, name)
                       if m in files and m != name and files[m].name != "__init__.py"}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_device_side_never_imports_the_packing_side():
    offenders = {name: sorted(m for m in deps if m.split(".")[0] in ("packager", "targets"))
                 for name, deps in _graph().items() if name.startswith("device_bench")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_import_runs_down_the_pipeline_layers():
    """`scripts/import_graph.py --check`: no import runs back up a layer, none closes a cycle (package
    ``__init__`` files counted), and no stage's package imports another stage's."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "none upward, no cycle, no stage importing another" in run.stdout


def test_the_layer_check_finds_an_upward_import_and_one_between_stages():
    import importlib.util

    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    graph_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph_module)
    fake = {"packager.errors": {"packager.cli.pack"}, "packager.cli.pack": set(),
            "packager.stages.prune.algorithm": {"packager.stages.distill.train"}, "packager.stages.distill.train": set()}
    assert graph_module.upward(fake) == [("packager.errors", "packager.cli.pack")]
    assert graph_module.across_units(fake) == [("packager.stages.prune.algorithm", "packager.stages.distill.train")]
