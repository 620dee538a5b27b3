"""The package has no import cycles, lazy imports included (issue 30): a cycle hidden by an
import inside a function still ties the two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _runtime(tree: ast.Module) -> ast.Module:
    """``tree`` without its ``if TYPE_CHECKING:`` blocks (imports for type checkers only)."""
    tree.body = [
        node
        for node in tree.body
        if not (isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"))
    ]
    return tree


def _graph() -> dict[str, set[str]]:
    """faceanon's modules and the faceanon modules each imports, at any depth of its code."""
    files = {}
    for path in SRC.joinpath("faceanon").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(_runtime(ast.parse(path.read_text()))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    graph = _graph()
    assert (
        "faceanon.secure.container" in graph
        and "faceanon.secure.seal" in graph["faceanon.secure.container"]
    )
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_lazy_cycle() -> None:
    graph = _graph()
    graph["faceanon.limits"] = {"faceanon.apps.cli"}  # cli -> ... -> limits -> cli
    assert any("faceanon.apps.cli" in c and "faceanon.limits" in c for c in _cycles(graph))


LONG = 400  # lines


def test_long_modules_say_why() -> None:
    """A module over ~400 lines holds several subjects unless its docstring says why it is one
    ("One module: ..."): a new long module fails here until it is split or explained."""
    unexplained = []
    for path in SRC.joinpath("faceanon").rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > LONG and "One module:" not in (
            ast.get_docstring(ast.parse(text)) or ""
        ):
            unexplained.append(f"{path.relative_to(SRC)}: {text.count(chr(10))} lines")
    assert unexplained == []
