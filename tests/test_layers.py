"""The package's modules import one another without a circle.

Imports inside functions count too (a lazy import is still a dependency);
``if TYPE_CHECKING:`` blocks do not (annotations only).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kho_drgn"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, own: str) -> set[str]:
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("kho_drgn"):
                found.add(node.module)
                # "from kho_drgn.formats import luo" imports a submodule
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kho_drgn"))
    return found - {own}


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = _imports(ast.parse(path.read_text()), name)
        # the package __init__ only names things lazily (PEP 562)
        graph[name] = {e for e in edges if e in modules and e != "kho_drgn"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle() -> None:
    graph = import_graph()
    assert "kho_drgn.checks" in graph and graph["kho_drgn.chain"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_pure_decoders_do_not_import_drgn() -> None:
    """Decoding is testable without a target: these modules never import drgn."""
    pure = ["fdt", "metadata", "pages", "memmap", "chain", "checks", "luo", "kallsyms"]
    pure += ["handover", "subtrees"]
    pure += ["formats/base", "formats/memblock", "formats/kho_test", "formats/luo"]
    for name in pure:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("drgn"), (name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("drgn") for a in node.names), name
