"""The import contract: packages import only downward, and no script imports another script.

    ws_dan  <-  super_resolution  <-  data_tools  <-  scripts

and inside ws_dan, subpackages too import only downward:

    common  <-  data  <-  models  <-  evaluation  <-  training

and no package's modules import each other in a circle.

Every import statement counts, those inside functions included (a function-level import is how a circle hides),
so this walks the syntax tree of every module rather than importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["ws_dan", "super_resolution", "data_tools"]  # lowest first; each may import only those before it
SCRIPTS = ROOT / "scripts"
WS_DAN_LAYERS = ["common", "data", "models", "evaluation", "training"]  # lowest first, as LAYERS


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative imports resolved against its package."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from package import module` names a module too
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _layer_files():
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            yield pytest.param(layer, path, id=str(path.relative_to(ROOT)))


@pytest.mark.parametrize("layer,path", list(_layer_files()))
def test_packages_import_only_downward(layer: str, path: Path) -> None:
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    forbidden = set(LAYERS) - allowed | {"scripts"}
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}" for line, name in imported_modules(path)
           if name.split(".")[0] in forbidden]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_script_imports_another_script() -> None:
    names = {p.stem for p in SCRIPTS.glob("*.py")}
    bad = []
    for path in sorted(SCRIPTS.glob("*.py")):
        for line, name in imported_modules(path):
            top = name.split(".")[0]
            if top == "scripts" or (top in names and top != path.stem):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
        text = path.read_text(encoding="utf-8")
        if "sys.path.insert" in text or "sys.path.append" in text:
            bad.append(f"{path.relative_to(ROOT)} edits sys.path (the project is installed; see the README)")
    assert not bad, "\n".join(bad)


def test_the_walker_sees_function_level_and_relative_imports(tmp_path: Path, monkeypatch) -> None:
    """The contract is only as good as the walker: check it on a file with the imports that used to hide."""
    pkg = ROOT / "ws_dan"
    probe = pkg / "_probe_for_test.py"
    probe.write_text("def f():\n    from data_tools import dedupe\n    from .common.io import PathLike\n"
                     "    import scripts.x\n")
    try:
        names = [name for _, name in imported_modules(probe)]
    finally:
        probe.unlink()
    assert "data_tools.dedupe" in names and "ws_dan.common.io" in names and "scripts.x" in names


def _ws_dan_files():
    for path in sorted((ROOT / "ws_dan").rglob("*.py")):
        yield pytest.param(path, id=str(path.relative_to(ROOT)))


@pytest.mark.parametrize("path", list(_ws_dan_files()))
def test_ws_dan_subpackages_import_only_downward(path: Path) -> None:
    parts = path.relative_to(ROOT / "ws_dan").parts
    if len(parts) == 1:  # ws_dan/__init__.py: the version only, so importing any subpackage stays cheap
        assert [name for _, name in imported_modules(path) if name.startswith("ws_dan")] == []
        return
    assert parts[0] in WS_DAN_LAYERS, f"ws_dan/{parts[0]}: a subpackage missing from WS_DAN_LAYERS"
    allowed = set(WS_DAN_LAYERS[: WS_DAN_LAYERS.index(parts[0]) + 1]) | {"__version__"}  # the root holds no code
    bad = [f"{path.relative_to(ROOT)}:{line} imports {name}" for line, name in imported_modules(path)
           if name.startswith("ws_dan.") and name.split(".")[1] not in allowed]
    assert not bad, "upward imports inside ws_dan:\n" + "\n".join(bad)


def module_graph(package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in the file). Only real module files count: an import
    of a package names its ``__init__``, which Python runs first in any case, so it cannot close a circle."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in (ROOT / package).rglob("*.py")
             if p.name != "__init__.py"}
    return {name: {m for _, m in imported_modules(path) if m in files and m != name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
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
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


@pytest.mark.parametrize("package", LAYERS)
def test_no_circle_inside_a_package(package: str) -> None:
    cycle = find_cycle(module_graph(package))
    assert not cycle, "circular imports: " + " -> ".join(cycle)


def test_the_circle_finder_finds_circles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    graph = module_graph("ws_dan")
    assert "ws_dan.common.io" in graph["ws_dan.evaluation.prediction"]  # function-level imports count too
