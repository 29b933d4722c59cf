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


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def test_the_readme_is_short_and_every_link_in_it_and_in_docs_resolves():
    import re

    readme = REPO_ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 150
    broken = []
    for page in [readme, *sorted((REPO_ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_nothing_refers_to_a_file_outside_the_repository():
    """Facts are stated where they are used, with how they were measured, never cited from a file beside the
    repository (../shared/ exists on the machines that built it, not in a user's clone)."""
    outside = []
    for path in REPO_ROOT.rglob("*"):
        parts = path.relative_to(REPO_ROOT).parts
        generated = parts[0] in (".venv", ".git", ".benchmarks", ".cache", ".pytest_cache", ".hypothesis", ".server-logs",
                                 "litserve_bench.egg-info") or parts[:2] == ("fixtures", "data")
        if generated or not path.is_file() or path.suffix not in (".py", ".md", ".yml", ".toml", ".ini", ".txt", ".cfg") \
                and path.name not in ("Makefile", "run"):
            continue
        if "../shared" in path.read_text(errors="replace") and path != Path(__file__):
            outside.append(str(path.relative_to(REPO_ROOT)))
    assert not outside, outside
