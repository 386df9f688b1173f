"""The layering contract: imports run one way (cli → apiserver/controllers → client/storage → api),
and no module imports itself back through others (no import circles).

Controllers and host agents see only the API, never the store or the server's internals, so
they run the same in one process or on another host.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

SRC = Path(__file__).resolve().parent.parent / "src" / "atoll"

FORBIDDEN = {
    "api": {"storage", "apiserver", "client", "controllers", "agent", "cli"},
    "storage": {"apiserver", "client", "controllers", "agent", "cli"},
    "client": {"storage", "apiserver", "controllers", "agent", "cli"},
    # controllers and agents talk to the API only: neither the store nor the server's internals
    "controllers": {"storage", "apiserver", "agent", "cli"},
    "agent": {"storage", "apiserver", "controllers", "cli"},
    "apiserver": {"controllers", "agent", "cli", "client"},
    "_kits": {"api", "storage", "apiserver", "client", "controllers", "agent", "cli"},
    # guest images: built by the CLI, seeds made by the agent; they know nothing of the platform
    "vmimage": {"storage", "apiserver", "client", "controllers", "agent", "cli"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("atoll."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("atoll."):
                    out.add(alias.name.split(".")[1])
    return out


def test_layers_import_one_way() -> None:
    violations = []
    for layer, forbidden in FORBIDDEN.items():
        for path in (SRC / layer).rglob("*.py"):
            bad = imported_packages(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(SRC)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_controllers_and_agents_reach_neither_store_nor_server() -> None:
    for layer in ("controllers", "agent"):
        assert {"storage", "apiserver"} <= FORBIDDEN[layer], layer


# -- import circles -------------------------------------------------------------------------------
def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run on import: the body, and what top-level ``if``/``try`` blocks hold
    (``if TYPE_CHECKING:`` included: a circle of type-only imports is still a circle)."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _module_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _module_level(node.body + node.orelse + node.finalbody +
                                     [s for h in node.handlers for s in h.body])


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """The ``atoll`` modules ``path`` imports at module level, relative imports resolved and
    ``from package import module`` counted as an import of that module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _module_level(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target not in modules:
                continue
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            out.update(submodules)
            if len(submodules) < len(node.names):
                out.add(target)  # names defined in the module (or package) itself
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    paths = list(SRC.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): module_imports(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as ``a, b, ..., a``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_find_cycle_reports_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_circles() -> None:
    graph = import_graph()
    assert "atoll.apiserver.objects" in graph and graph["atoll.apiserver.objects"], \
        "the import graph came out empty"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])
