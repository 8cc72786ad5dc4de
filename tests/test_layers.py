"""The layers: shared/ at the bottom, preprocess/ and trainer/ side by side on it, melshard/
(the Python API, the console command and the demo) above both. Every import is checked,
function-level ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What each package may never import. trainer/cli.py's `demo` is the one documented exception:
# it runs melshard/demo.py, kept as `python -m trainer demo` for the README's first command.
FORBIDDEN = {"shared": {"preprocess", "trainer", "melshard"}, "preprocess": {"trainer", "melshard"},
             "trainer": {"preprocess", "melshard"}}
ALLOWED = {("trainer/cli.py", "melshard.demo")}


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
        for name in imports(path):
            if name.split(".")[0] in FORBIDDEN[package] and (rel, name) not in ALLOWED:
                found.append(f"{rel} imports {name}")
    assert not found, found


def test_the_check_sees_a_function_level_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from preprocess.pipeline import run\n    import trainer.loop\n")
    assert imports(sample) == ["preprocess.pipeline", "trainer.loop"]
