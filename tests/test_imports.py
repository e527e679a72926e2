"""The package's import graph: no circles (``importlib`` included), and commands stand side by side.

Every module under ``orchestrator/`` is parsed with ``ast``; every import counts, wherever it sits
(module level, inside a function, under ``TYPE_CHECKING``). ``importlib.import_module`` counts too:
a literal names one module, an f-string with a literal prefix (``f"orchestrator.commands.{name}"``)
names every module under that prefix, and any other argument names every module the file spells out
in a string literal (a lazy table such as ``orchestrator.emulator._LAZY``). Importing a submodule
runs its package's ``__init__`` first; that is not counted as an edge (an ``__init__`` that imports
its own submodules is no circle).

The same parse shows where answers are read: outside ``api/`` an answer's ``body`` only ever goes
whole to a view of ``api/views.py`` (``Snapshot.from_body(answer.body)``), and nothing imports
``fetch_json`` (a raw answer dict).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "orchestrator"
COMMANDS = "orchestrator.commands"
REGISTRY = "orchestrator.cli"  # names every command, through importlib, and nothing else does
# Where an answer's dict may be read: api/ parses it, the emulator writes it, models holds ``Answer``.
ANSWER_READERS = ("orchestrator.api", "orchestrator.emulator", "orchestrator.models")


@dataclasses.dataclass(frozen=True, slots=True)
class Edge:
    """One import: the importing module, the imported one, and the first line that says so."""

    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


Graph = Mapping[str, list[Edge]]


def module_files(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root`` by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _known(target: str, modules: Mapping[str, Path]) -> list[str]:
    """The package module an import of ``target`` names: itself, or its nearest known parent."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return [target] if target else []


def _is_import_module(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        return (
            func.attr == "import_module" and isinstance(func.value, ast.Name) and func.value.id == "importlib"
        )
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def _dynamic(call: ast.Call, tree: ast.Module, modules: Mapping[str, Path]) -> list[str]:
    """The modules an ``importlib.import_module(...)`` call may load (see the module docstring)."""
    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return _known(arg.value, modules)
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)
        return sorted(name for name in modules if name.startswith(prefix) and len(name) > len(prefix))
    spelled = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules
    }
    assert spelled, f"importlib.import_module at line {call.lineno}: cannot tell which module it loads"
    return sorted(spelled)


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> Iterator[Edge]:
    """Every import of another package module that ``name`` makes, anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets += _known(alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets += [full] if full in modules else _known(base, modules)
        elif isinstance(node, ast.Call) and _is_import_module(node):
            targets = _dynamic(node, tree, modules)
        for target in targets:
            if target != name:
                yield Edge(name, target, getattr(node, "lineno", 0))


@functools.cache
def import_graph(root: Path = ROOT) -> Graph:
    """Each module's imports of the package's other modules (one edge per pair); parsed once a process."""
    modules = module_files(root)
    graph: dict[str, list[Edge]] = {}
    for name, path in modules.items():
        first: dict[str, Edge] = {}
        for edge in sorted(imports_of(name, path, modules), key=lambda edge: edge.line):
            first.setdefault(edge.target, edge)
        graph[name] = sorted(first.values(), key=lambda edge: edge.target)
    return graph


def circles(graph: Graph) -> list[tuple[list[str], list[Edge]]]:
    """Each group of modules that import each other round (Tarjan's strongly connected components),
    with the shortest circle through its first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for edge in graph.get(node, []):
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            group = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [(group, _circle(graph, group)) for group in groups]


def _circle(graph: Graph, group: list[str]) -> list[Edge]:
    """The shortest way from the group's first module back to itself, inside the group."""
    start = group[0]
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target == start:
                    return [*paths[node], edge]
                if edge.target in group and edge.target not in paths:
                    paths[edge.target] = [*paths[node], edge]
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no circle in {group}")


def _command(module: str) -> bool:
    return module.startswith(f"{COMMANDS}.")


def _edges(graph: Graph) -> list[Edge]:
    return [edge for found in graph.values() for edge in found]


@pytest.mark.no_cover  # it runs no code of the package, only the tracer (development.md)
def test_no_import_circles() -> None:
    """No module imports itself back through others, counting lazy and ``importlib`` imports."""
    found = circles(import_graph())
    shown = "\n".join(
        f"{len(group)} modules ({', '.join(group)}); one circle: " + " ; ".join(map(str, circle))
        for group, circle in found
    )
    assert not found, f"import circles:\n{shown}"


def test_no_command_imports_another() -> None:
    """A command module imports the run machinery, never another command."""
    crossing = [edge for edge in _edges(import_graph()) if _command(edge.source) and _command(edge.target)]
    assert not crossing, "commands importing commands:\n" + "\n".join(map(str, crossing))


def test_only_the_registry_imports_commands() -> None:
    """Outside ``commands/``, only the CLI's registry names command modules."""
    reaching = [
        edge
        for edge in _edges(import_graph())
        if _command(edge.target) and not _command(edge.source) and edge.source != REGISTRY
    ]
    assert not reaching, "modules importing commands:\n" + "\n".join(map(str, reaching))


# The layers, lowest first: a module imports its own layer and those below, never one above. The base
# imports nothing else of the package; api/ (the requests) and the emulator stand on it; the engine
# (every other module) on those; the commands on the engine; the CLI names the commands.
BASE = frozenset(
    f"orchestrator.{name}"
    for name in ("defaults", "errors", "models", "console", "config", "retry", "throttle")
)


def layer(module: str) -> int:
    """0 base, 1 api/ and the emulator, 2 the engine, 3 the commands, 4 the CLI."""
    if module in BASE or module == "orchestrator":
        return 0
    if module.startswith(("orchestrator.api", "orchestrator.emulator")):
        return 1
    if _command(module):
        return 3
    if module in (REGISTRY, "orchestrator.__main__"):
        return 4
    return 2


def test_no_import_points_up_a_layer() -> None:
    """No arrow back up: the base needs nothing of the package, api/ no engine module, the engine no
    command, a command not the CLI."""
    upward = [edge for edge in _edges(import_graph()) if layer(edge.target) > layer(edge.source)]
    assert not upward, "imports up a layer:\n" + "\n".join(map(str, upward))


def test_the_layer_check_sees_an_arrow_up() -> None:
    """The check is not empty: api/ importing the engine would be caught."""
    assert layer("orchestrator.retry") < layer("orchestrator.api.routes") < layer("orchestrator.deleter")
    assert layer("orchestrator.deleter") < layer("orchestrator.commands.prune") < layer(REGISTRY)


def test_the_walker_counts_every_kind_of_import(tmp_path: Path) -> None:
    """Function-level, ``TYPE_CHECKING``, relative and ``importlib`` imports are edges (or the checks prove nothing)."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    import pkg.b\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import c\n",
        "sub/__init__.py": "from . import c\n",
        "sub/c.py": "from ..d import thing\n",
        "d.py": "import importlib\ndef f(name):\n    return importlib.import_module(f'pkg.sub.{name}')\n",
        "e.py": "import importlib\nLAZY = {'x': 'pkg.a'}\ndef f(key):\n    return importlib.import_module(LAZY[key])\n",
    }
    for name, text in files.items():
        (package / name).write_text(text, encoding="utf-8")
    graph = import_graph(package)
    pairs = {(edge.source, edge.target) for edge in _edges(graph)}
    assert pairs == {
        ("pkg.a", "pkg.b"),
        ("pkg.b", "pkg.sub.c"),
        ("pkg.sub", "pkg.sub.c"),
        ("pkg.sub.c", "pkg.d"),
        ("pkg.d", "pkg.sub.c"),
        ("pkg.e", "pkg.a"),
    }
    assert [(group, [str(edge) for edge in circle]) for group, circle in circles(graph)] == [
        (["pkg.d", "pkg.sub.c"], ["pkg.d -> pkg.sub.c (line 3)", "pkg.sub.c -> pkg.d (line 1)"])
    ]


def test_the_registry_is_seen() -> None:
    """The CLI's ``importlib`` registry reaches every command, and the emulator's lazy table its server."""
    graph = import_graph()
    commands = {name for name in module_files(ROOT) if _command(name)}
    assert commands
    assert commands <= {edge.target for edge in graph[REGISTRY]}
    assert {"orchestrator.emulator.app", "orchestrator.emulator.server"} <= {
        edge.target for edge in graph["orchestrator.emulator"]
    }


def _views() -> set[str]:
    """The names ``api/views.py`` defines at module level (its views and parsers)."""
    tree = ast.parse((ROOT / "api" / "views.py").read_text(encoding="utf-8"))
    kinds = (ast.ClassDef, ast.FunctionDef)
    return {node.name for node in tree.body if isinstance(node, kinds)}


def raw_reads(source: str, views: set[str]) -> list[int]:
    """Lines that read an answer's ``body`` other than by handing it whole to a view, or that import
    ``fetch_json``."""
    tree = ast.parse(source)
    handed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            owner = func.value if isinstance(func, ast.Attribute) else func
            if isinstance(owner, ast.Name) and owner.id in views:
                handed.update(id(arg) for arg in node.args)
    return sorted(
        {
            node.lineno
            for node in ast.walk(tree)
            if (isinstance(node, ast.Attribute) and node.attr == "body" and id(node) not in handed)
            or (isinstance(node, ast.ImportFrom) and any(alias.name == "fetch_json" for alias in node.names))
        }
    )


def test_answers_are_read_only_in_api() -> None:
    """Outside ``api/`` (and the emulator, and ``models.Answer``) no module reads an answer's dict: its
    ``body`` goes whole to a view of ``api/views.py``, parsed once there."""
    views = _views()
    found = [
        f"{name} line {line}"
        for name, path in module_files(ROOT).items()
        if not name.startswith(ANSWER_READERS)
        for line in raw_reads(path.read_text(encoding="utf-8"), views)
    ]
    assert not found, "answer dicts read outside api/:\n" + "\n".join(found)


def test_the_reader_check_sees_a_raw_read() -> None:
    """A ``.get`` on a body, an ``isinstance`` of it and a ``fetch_json`` import are seen; a body handed
    to a view is not (or the check above proves nothing)."""
    source = (
        "from orchestrator.api.safe import fetch_json\n"
        "a = answer.body.get('x')\n"
        "b = isinstance(answer.body, dict)\n"
        "c = Snapshot.from_body(answer.body)\n"
        "d = created_snapshot(answer.body)\n"
    )
    assert raw_reads(source, _views()) == [1, 2, 3]
