"""The layout's rules, checked: servers/ says what is served and imports nothing from the harness; tests do
not import conftest; conftest.py is options and wiring only."""

import ast
from pathlib import Path

from fixtures.drive.server import REPO_ROOT


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
    """servers/llm.py imported fixtures.measure.roofline to compute bytes per token in the worker; the benchmark
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


# fixtures/, bottom to top: drive (start servers, send load, check answers), measure (rounds, summaries, machine,
# ceilings), record (what a benchmark saves and asserts), track (runs across commits), then the top-level modules
# in this order, and setup (first-run checks) and the plugin above everything. A module imports only from its own
# group (without cycles) and from groups below it.
FIXTURE_LAYERS = ("drive", "measure", "record", "track", "variants", "closed_loop", "streaming", "load_models", "litapi",
                  "chat",
                  "expected_relations",
                  "ab", "power", "setup", "plugin")


def _fixture_layer(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "fixtures"


def fixture_import_violations() -> list:
    """'importer -> imported' for every fixtures import pointing up (or sideways at the top), and every cycle
    inside a group."""
    violations, within = [], {}
    for path in sorted((REPO_ROOT / "fixtures").rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).with_suffix("")
        module = ".".join(rel.parts)
        layer = rel.parts[1] if len(rel.parts) > 2 else rel.stem
        if layer == "__init__":
            continue
        assert layer in FIXTURE_LAYERS, f"{module} is in no layer of FIXTURE_LAYERS"
        for imported in imported_modules(path):
            if not imported.startswith("fixtures."):
                continue
            target = _fixture_layer(imported)
            if target == layer:
                within.setdefault(module, set()).add(imported)
            elif FIXTURE_LAYERS.index(target) > FIXTURE_LAYERS.index(layer):
                violations.append(f"{module} -> {imported}")

    def cycle_from(start, node, seen):
        for nxt in within.get(node, ()):
            if nxt == start:
                return True
            if nxt not in seen:
                seen.add(nxt)
                if cycle_from(start, nxt, seen):
                    return True
        return False

    violations += [f"{module} is in an import cycle" for module in sorted(within) if cycle_from(module, module, set())]
    return violations


def test_fixture_imports_only_point_down():
    """The harness read as layers: a figure is driven, measured, recorded, tracked; nothing below imports the
    variants, a benchmark's composition or the plugin (once, drive/answers imported the variants and
    measure/ceilings the user's declaration)."""
    assert fixture_import_violations() == []
