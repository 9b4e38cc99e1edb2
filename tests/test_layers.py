"""The import contract: packages import only downward, and no script imports another script.

    ws_dan  <-  super_resolution  <-  data_tools  <-  scripts

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
    probe.write_text("def f():\n    from data_tools import dedupe\n    from .io import PathLike\n"
                     "    import scripts.x\n")
    try:
        names = [name for _, name in imported_modules(probe)]
    finally:
        probe.unlink()
    assert "data_tools.dedupe" in names and "ws_dan.io" in names and "scripts.x" in names
