#!/usr/bin/env python3
"""The import graph of the pipeline's packages, by layer: which module imports which, and whether any import runs
back up a layer or closes a cycle.

    python scripts/import_graph.py            # the layers, their modules and the imports between layers
    python scripts/import_graph.py --check    # exit 1 (naming each) on an upward import, a cycle, or one
                                              # stage's package importing another's

Every import counts, lazy (in-function) ones included, except those under ``if TYPE_CHECKING:`` (type names
only: nothing runs). A package's ``__init__`` is a module like any other: importing ``a.b`` runs it.
``tests/test_import_graph.py`` runs the check.
"""
from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("device_bench", "packager", "targets")

#: bottom to top: a module may import its own layer and the layers below it, never one above
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    ("device", ("device_bench",), "the torch-free device side: bundles, runners, bench, agent"),
    ("base", ("packager", "packager.errors", "packager.records", "packager.declarations", "packager.native_output",
              "packager.labelled_data", "packager.distributed", "packager.studies",
              "packager.calib", "packager.bundle", "packager.progress", "packager.threads"),
     "errors, typed records, data files, processes, study databases, bundle folders, progress lines, thread counts"),
    ("model", ("packager.tasks", "packager.embedding_pipeline", "packager.surgery", "packager.pruned_models",
               "packager.pruned_bert", "packager.models"),
     "what a model does (tasks, their wrappers and gates) and how it loads"),
    ("targets", ("targets",), "one converter per target, each verifying its artifact"),
    ("families", ("packager.families",), "the table of architectures: the tasks, stages and targets each supports"),
    ("training", ("packager.training",), "what every training stage shares: options, trainer, evaluation"),
    ("stages", ("packager.stages",), "one package per recipe stage: its spec, registration and algorithm"),
    ("pack", ("packager.pack", "packager.target_options", "packager.precision_fallback"),
     "convert to every target (with its options), verify, fall back to float where int8 misses, publish"),
    ("recipe", ("packager.recipe",), "a recipe: its schema, its search space, its run (stages, gate, pack)"),
    ("tune", ("packager.tune",), "the search over the stages' knobs for the fastest bundle within a budget"),
    ("reports", ("packager.tradeoff", "packager.length_plot"), "reading bundles and bench reports side by side"),
    ("cli", ("packager.cli",), "the `edgepack` commands"),
]

#: folders whose sub-packages are registered units that never import one another
UNIT_FOLDERS = ("packager.stages",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (runtime imports only)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                # ``import a.b.c`` runs a, a.b and a.b.c
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names if f"{mod}.{alias.name}" in known)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    files = modules()
    known = set(files)
    return {name: imports(path, name, known) for name, path in files.items()}


def layer_of(module: str) -> int:
    """Index in ``LAYERS`` of the most specific prefix naming ``module``."""
    best, best_len = -1, -1
    for index, (_, prefixes, _) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0:
        raise SystemExit(f"import_graph: module {module} is in no layer (add it to LAYERS)")
    return best


def upward(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, deps in g.items() for b in deps if layer_of(b) > layer_of(a))


def unit_of(module: str) -> str | None:
    """The registered unit a module belongs to (``packager.stages.prune.algorithm`` -> ``packager.stages.prune``)."""
    for units in UNIT_FOLDERS:
        if module.startswith(units + "."):
            unit = module[len(units) + 1:].split(".")[0]
            return f"{units}.{unit}" if (ROOT / units.replace(".", "/") / unit).is_dir() else None
    return None


def across_units(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from one stage's package into another's: what they share belongs one layer down."""
    return sorted((a, b) for a, deps in g.items() for b in deps
                  if unit_of(a) and unit_of(b) and unit_of(a) != unit_of(b))


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
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
        for w in sorted(g.get(v, ())):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def describe(g: dict[str, set[str]]) -> str:
    files = modules()
    lines = []
    between: dict[tuple[int, int], int] = defaultdict(int)
    for a, deps in g.items():
        for b in deps:
            if layer_of(a) != layer_of(b):
                between[(layer_of(a), layer_of(b))] += 1
    for index in reversed(range(len(LAYERS))):
        name, _, what = LAYERS[index]
        members = sorted(m for m in g if layer_of(m) == index)
        size = sum(len(files[m].read_text(encoding="utf-8").splitlines()) for m in members)
        below = ", ".join(f"{LAYERS[j][0]} ({n})" for (i, j), n in sorted(between.items()) if i == index)
        lines.append(f"{index:>2} {name}: {what} — {len(members)} modules, {size} lines")
        lines.append(f"     imports: {below or 'nothing of the project'}")
        if not name == "device":
            lines.extend(f"       {m}" for m in members)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check: exit 1 on an upward import, a cycle or an import between two stages")
    args = parser.parse_args()
    g = graph()
    if not args.check:
        print(describe(g))
    problems = [f"upward import: {a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                for a, b in upward(g)]
    problems += [f"import across units: {a} imports {b}" for a, b in across_units(g)]
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(g)]
    for line in problems:
        print(line, file=sys.stderr)
    if args.check and not problems:
        edges = sum(len(d) for d in g.values())
        print(f"import graph ok: {len(g)} modules, {edges} imports, {len(LAYERS)} layers, none upward, no cycle, "
              "no stage importing another")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
