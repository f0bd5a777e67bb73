"""The package layering DESIGN.md promises, checked on the source (imports inside
functions count; ``if TYPE_CHECKING:`` blocks do not):

    compiler  ->  passes, codegen  ->  runtime  ->  ir
    (passes, codegen, runtime and ir never import compiler; runtime never imports
    passes or codegen), and no import cycle between files.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ir", "compiler", "passes", "codegen", "runtime")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = p
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[str]:
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out.extend(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for target in _imports(ast.parse(path.read_text())):
            if target in mods and target != name:
                g.add_edge(name, target)
    return g


def _layer(mod: str) -> str:
    return mod.split(".")[0]


def test_lower_layers_never_import_the_driver():
    bad = [(a, b) for a, b in import_graph().edges
           if _layer(a) in ("ir", "passes", "codegen", "runtime") and _layer(b) == "compiler"]
    assert not bad, f"imports of compiler/ from below it: {bad}"


def test_runtime_reads_the_executable_alone():
    bad = [(a, b) for a, b in import_graph().edges if _layer(a) == "runtime" and _layer(b) in ("passes", "codegen")]
    assert not bad, f"runtime/ imports passes/ or codegen/: {bad}"


def test_ir_imports_only_ir():
    bad = [(a, b) for a, b in import_graph().edges if _layer(a) == "ir" and _layer(b) != "ir"]
    assert not bad, f"ir/ imports other packages: {bad}"


def test_no_import_cycle_between_files():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles[:10])
