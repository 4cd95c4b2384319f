"""Every third-party module keywatch imports is declared in pyproject.toml, not left to arrive through another one."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _top_level_imports(root: Path) -> set[str]:
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"keywatch"}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_every_module_src_imports_is_a_declared_runtime_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_top_level_imports(REPO / "src" / "keywatch")):
        dists = {_name(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported by src/ but not in [project] dependencies: {undeclared}"


def test_every_module_the_tests_import_is_declared_in_the_dev_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]}
    tests = REPO / "tests"
    local = {p.stem for p in tests.rglob("*.py")} | {p.name for p in tests.rglob("*") if p.is_dir()} | {"tests"}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_top_level_imports(tests) - local):
        dists = {_name(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported by tests/ but not in the dev extra: {undeclared}"


def test_the_check_sees_an_undeclared_import(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("import aiohttp\nfrom faust import App\nimport os\nfrom . import x\n")
    assert _top_level_imports(tmp_path) == {"aiohttp", "faust"}
