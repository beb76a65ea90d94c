"""The layout's rules, read from the source with :mod:`ast` (deferred imports included).

- Serving code (``serving/``, ``snapcat/serve/`` and every snapcat module they import) imports only
  ``snapcat.contract``, ``snapcat.imaging``, ``snapcat.serve``, ``snapcat.errors``, the standard
  library and the serving lock's packages: the serving image has no TensorFlow, and this keeps it
  true by construction (``tests/serve/test_transformer_core.py`` also checks, in a subprocess,
  that TensorFlow is never imported at run time).
- Each floor imports only the floors below it; the contract imports no other floor.
- No import circles between snapcat modules.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("snapcat", "serving", "pipelines", "components")

#: The floors of snapcat and what each may import (besides itself and ``snapcat.errors``).
FLOORS = {
    "contract": set(),
    "imaging": {"contract"},
    "stats": {"contract"},
    "dataset": {"contract", "imaging", "storage"},
    "serve": {"contract", "imaging"},
    "train": {"contract", "imaging", "dataset", "stats", "storage"},
    "evaluate": {"contract", "imaging", "dataset", "train", "stats", "storage", "rollout"},
    # batch prediction shapes its lines with the transformer's own (TF-free) answer code
    "batch": {"contract", "imaging", "dataset", "train", "serve", "storage"},
    "audit": {"contract", "imaging", "dataset", "train", "batch", "evaluate", "storage"},
}
SERVING_ALLOWED = ("snapcat.contract", "snapcat.imaging", "snapcat.serve", "snapcat.errors")
#: Import names of the serving lock's packages where they differ from the distribution's name.
IMPORT_NAMES = {"pillow": "PIL", "pyyaml": "yaml", "pillow-heif": "pillow_heif",
                "prometheus-client": "prometheus_client",
                "python-dateutil": "dateutil", "protobuf": "google"}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "tests" not in path.relative_to(REPO).parts:
                found[module_name(path)] = path
    return found


@cache
def imports_of(module: str) -> frozenset[str]:
    """Every module ``module`` imports, at the top or inside a function, as dotted names (``from
    package import submodule`` gives the submodule when it is one)."""
    path = modules()[module]
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                names.add(child if child in modules() else base)
    return frozenset(names)


def internal(name: str) -> str | None:
    """The project module ``name`` resolves to (itself or its closest parent package)."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


def closure(roots: list[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(m for m in map(internal, imports_of(module)) if m)
    return seen


def serve_lock_imports() -> set[str]:
    names = set()
    for line in (REPO / "requirements" / "serve.lock").read_text("utf-8").splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==", line)
        if match:
            dist = match.group(1).lower()
            names.add(IMPORT_NAMES.get(dist, dist.replace("-", "_")))
    return names


def serving_roots() -> list[str]:
    return [m for m in modules() if m.startswith(("serving", "snapcat.serve"))]


def test_serving_code_imports_only_the_contract_imaging_and_serve():
    reached = closure(serving_roots())
    outside = sorted(
        m for m in reached if m.startswith("snapcat") and not m.startswith(SERVING_ALLOWED)
        and m != "snapcat" and not m.startswith("serving")
    )  # fmt: skip
    assert not outside, f"serving code reaches {outside}"


def test_serving_code_imports_only_the_stdlib_and_the_serving_lock():
    allowed = serve_lock_imports() | set(sys.stdlib_module_names) | set(PACKAGES)
    third_party = {
        (name.split(".")[0], module)
        for module in closure(serving_roots())
        for name in imports_of(module)
        if name.split(".")[0] not in allowed
    }
    assert not third_party, f"not in requirements/serve.lock: {sorted(third_party)}"
    assert "tensorflow" not in serve_lock_imports()


@pytest.mark.parametrize("floor", sorted(FLOORS))
def test_each_floor_imports_only_the_floors_below_it(floor):
    allowed = {floor, "errors"} | FLOORS[floor]
    wrong = sorted(
        (module, target)
        for module in modules()
        if module == f"snapcat.{floor}" or module.startswith(f"snapcat.{floor}.")
        for target in filter(None, map(internal, imports_of(module)))
        if target.startswith("snapcat.") and target.split(".")[1] not in allowed
    )
    assert not wrong, f"{floor} imports above itself: {wrong}"


def test_no_import_circles():
    graph = {
        m: {t for t in map(internal, imports_of(m)) if t and t != m and t in modules()}
        for m in modules()
    }
    # a package's __init__ importing its own submodules is how a package exposes them
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    cycles, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, f"import circles: {cycles}"


def test_top_level_keeps_only_the_entry_points_and_shared_helpers():
    top = {p.stem for p in (REPO / "snapcat").glob("*.py")}
    assert top == {"__init__", "cli", "demo", "errors", "storage", "stats"}
