"""The layering contract: imports run one way (cli → apiserver/controllers → client/storage → api).

Controllers see only the API, never the store or the server's internals, so they run the same
in one process or on another host.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "atoll"

FORBIDDEN = {
    "api": {"storage", "apiserver", "client", "controllers", "agent", "cli"},
    "storage": {"apiserver", "client", "controllers", "agent", "cli"},
    "client": {"storage", "apiserver", "controllers", "agent", "cli"},
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
