"""The code stays readable: short functions, and an architecture page true to the tree."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dsae", "envs")
MAX_FUNCTION_LINES = 60


def _modules():
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if p.name != "__init__.py")


def test_no_function_in_the_packages_is_longer_than_a_screen():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_architecture_page_names_every_module_and_only_modules_that_exist():
    page = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:dsae|envs)/[\w/]+\.py)`", page))
    actual = {str(p.relative_to(REPO)) for p in _modules()}
    assert named - actual == set(), f"docs/architecture.md names modules that do not exist: {named - actual}"
    assert actual - named == set(), f"modules missing from docs/architecture.md: {actual - named}"


def test_no_code_or_doc_points_outside_the_repository():
    offenders = [str(p.relative_to(REPO)) for p in [*_modules(), *REPO.glob("*.md"), *(REPO / "docs").glob("*.md")]
                 if "../shared" in p.read_text() or "DESIGN.md" in p.read_text()]
    assert not offenders, offenders
