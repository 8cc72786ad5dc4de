"""The layers: shared/ at the bottom, preprocess/ and trainer/ side by side on it, melshard/
(the Python API, the command tree and the demo) above both. A package's `__main__.py` is an entry
point (`python -m preprocess` runs the melshard tree), so it sits at the top with melshard/, and
nothing may import it. Every import is checked, function-level ones included; nothing is exempt."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What each package's modules may never import.
FORBIDDEN = {"shared": {"preprocess", "trainer", "melshard"}, "preprocess": {"trainer", "melshard"},
             "trainer": {"preprocess", "melshard"}}
PACKAGES = (*FORBIDDEN, "melshard")


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_across_or_up_the_layers(package):
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if path.name == "__main__.py":
            continue  # an entry point: the test below
        for name in imports(path):
            if name.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{rel} imports {name}")
    assert not found, found


def test_entry_points_are_imported_by_nothing_and_only_run_the_tree():
    mains = {f"{path.parent.name}.__main__": path
             for package in PACKAGES for path in (REPO / package).rglob("__main__.py")}
    assert set(mains) == {"preprocess.__main__", "trainer.__main__", "melshard.__main__"}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            assert not set(imports(path)) & set(mains), f"{path} imports an entry point"
    for name, path in mains.items():
        assert imports(path) == ["melshard.cli"], f"{name}: an entry point runs the command tree, nothing else"


def test_the_check_sees_a_function_level_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from preprocess.pipeline import run\n    import trainer.loop\n")
    assert imports(sample) == ["preprocess.pipeline", "trainer.loop"]
