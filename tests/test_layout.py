"""The layout's rules, checked: servers/ says what is served and imports nothing from the harness; tests do
not import conftest; conftest.py is options and wiring only."""

import ast
from pathlib import Path

from fixtures.server import REPO_ROOT


def imported_modules(path: Path) -> set:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_served_code_imports_nothing_from_the_harness():
    """servers/llm.py imported fixtures.roofline to compute bytes per token in the worker; the benchmark
    matrix (servers/variants.py) lived beside the servers."""
    offenders = {path.name: sorted(m for m in imported_modules(path) if m.split(".")[0] in ("fixtures", "tests", "conftest"))
                 for path in (REPO_ROOT / "servers").glob("*.py")}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_tests_do_not_import_conftest_and_conftest_is_wiring_only():
    importing = [str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "tests").rglob("*.py")
                 if "conftest" in imported_modules(path)]
    assert importing == []
    assert len((REPO_ROOT / "conftest.py").read_text().splitlines()) < 60
