"""The layers of docs/architecture.md, read from the source: every import of a pier module
(at the top, in a function or under TYPE_CHECKING) points down, and no modules import each
other in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The layer of a module: its first name under pier (`pier.api.ingest` -> "api"). Each may import
# itself and what its set names, nothing else of pier.
MAY_IMPORT: dict[str, set[str]] = {
    "clock": set(),
    "settings": set(),
    "client": set(),  # the Python SDK: it talks to Pier over HTTP only
    "domain": {"clock"},
    "store": {"domain", "clock"},
    "process": {"domain", "clock"},
    "writer": {"store", "domain", "clock", "process", "settings"},
    "lists": {"store", "domain", "clock"},  # beside the writer: lists' backfill and sweeper
    # the writer process's socket protocol: the worker's client, the writer process's server
    # and the writer process's main (delivery only when it delivers itself)
    "writerproc": {
        "delivery",
        "writer",
        "lists",
        "store",
        "domain",
        "clock",
        "process",
        "settings",
    },
    "api": {"writer", "lists", "store", "domain", "clock", "process", "settings"},
    # destinations: the engine reads the store and sends the feed as api/ renders it; its
    # routes are the API's, its tab the portal's; the app and the CLI start it
    "delivery": {"api", "writer", "store", "domain", "clock", "process", "settings"},
    "portal": {
        *("delivery", "api", "writer", "lists", "store", "domain", "clock", "process"),
        "settings",
    },
    "app": {
        *("delivery", "api", "portal", "writer", "lists", "store", "domain", "clock", "process"),
        "writerproc",
        "settings",
    },
    "__main__": {"cli"},  # the console script: the CLI, imported when it runs
    "options": {"settings"},  # the settings as click options
    # `pier serve`: the processes it starts, by name ("module:function"), not by import
    "cli": {"commands", "options", "process", "settings"},
    "commands": {  # every other command
        *("app", "delivery", "api", "portal", "writer", "lists", "store", "domain", "clock"),
        "writerproc",
        "process",
        "options",
        "settings",
    },
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The pier modules `path` imports, relative imports resolved."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from . import ingest`: the submodule, when there is one
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                if (SRC / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    SRC / candidate.replace(".", "/") / "__init__.py"
                ).exists():
                    found.add(candidate)
    return {m for m in found if m == "pier" or m.startswith("pier.")}


GRAPH = {module_name(p): imports(p) for p in sorted((SRC / "pier").rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != "pier"))
def test_imports_point_down(module: str) -> None:
    own = layer(module)
    assert own in MAY_IMPORT, f"{module}: a layer docs/architecture.md and this test do not know"
    upward = sorted(
        m for m in GRAPH[module] if layer(m) not in MAY_IMPORT[own] | {own} and m != "pier"
    )
    assert not upward, f"{module} ({own}) imports upward: {upward}"


def test_no_circular_imports() -> None:
    """Tarjan's strongly connected components: any with two modules or more is a circle.
    A package and its own modules are left out (`pier.store` importing `pier.store.sqlite`)."""
    edges = {
        m: {t for t in targets if t in GRAPH and not m.startswith(t + ".") and t != m}
        for m, targets in GRAPH.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not circles, f"modules importing each other in a circle: {circles}"


def test_one_clock() -> None:
    """Every module takes the time from pier.clock, not from a module that imported it."""
    elsewhere = []
    for path in sorted((SRC / "pier").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.ImportFrom)
                and (node.module or "").split(".")[-1] != "clock"
                and any(alias.name == "now_ms" for alias in node.names)
            ):
                elsewhere.append(f"{module_name(path)}: from {node.module} import now_ms")
    assert not elsewhere, elsewhere


# What a process of `pier serve` must not import: each module costs every such process its
# memory (docs/performance.md, "The default layout (eleventh session)"). The key is the module
# the process starts from.
NOT_IMPORTED = {
    # the parent of them all: it starts processes and serves nothing itself
    "pier.cli": {"pier.store", "pier.api", "pier.writer", "starlette", "httpx", "cryptography"},
    # a worker: delivering is the delivery process's; Fernet only with --secret-key
    "pier.app": {"httpx", "cryptography", "pier.delivery.engine"},
    "pier.writerproc": {"pier.api", "httpx", "cryptography", "jinja2", "argon2"},
    "pier.delivery.engine": {"cryptography", "jinja2", "argon2"},
}


@pytest.mark.parametrize("module", sorted(NOT_IMPORTED))
def test_a_process_imports_only_what_it_runs(module: str) -> None:
    shown = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    loaded = NOT_IMPORTED[module] & set(shown)  # (a package is in it with any of its modules)
    assert not loaded, f"{module} imports {sorted(loaded)}"
