"""The house's layers, as CONTRIBUTING.md draws them, read from the source: no import cycle anywhere in ``src/``
(imports inside functions and under ``TYPE_CHECKING`` count too), the library never imports the lab, ``core`` never
imports ``algorithms``, and the lab's rooms import one way, from ``commands`` down to ``catalog``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# the lab's rooms, bottom to top: a room may import the rooms below it (and the library), never one above
LAB_ROOMS = ("catalog", "training", "executors", "study", "present", "reproduce", "commands")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "optimlab").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The optimlab modules ``name`` imports anywhere in its file (the module itself when ``from P import N``
    names a module, else the package ``P``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("optimlab"):
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_src() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["optimlab", "lab"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in LAB_ROOMS else "lab"


def test_the_library_never_imports_the_lab_and_core_never_imports_algorithms() -> None:
    wrong = []
    for module, targets in _graph().items():
        for target in targets:
            if module != "optimlab.__main__" and not module.startswith("optimlab.lab") and target.startswith(
                    "optimlab.lab"):
                wrong.append((module, target))
            if module.startswith("optimlab.core") and not target.startswith("optimlab.core"):
                wrong.append((module, target))
    assert wrong == []


def test_the_labs_rooms_import_one_way() -> None:
    wrong = []
    for module, targets in _graph().items():
        room = _room(module)
        if room is None or room == "lab":
            continue
        for target in targets:
            other = _room(target)
            if other in LAB_ROOMS and LAB_ROOMS.index(other) > LAB_ROOMS.index(room):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


@pytest.mark.parametrize("room", LAB_ROOMS)
def test_every_room_is_a_package_with_a_docstring(room: str) -> None:
    init = SRC / "optimlab" / "lab" / room / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init} should say what the room holds"
