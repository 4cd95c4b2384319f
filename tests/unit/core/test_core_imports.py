"""The detection core stays pure: no module of keywatch.core imports faust, aiokafka or the worker's layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[3] / "src" / "keywatch" / "core"
FORBIDDEN = ("faust", "aiokafka", "mode", "keywatch.stream", "keywatch.pipeline", "keywatch.sinks", "keywatch.cli")


def imported(path: Path) -> set[str]:
    """Every module a source file imports (absolute names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_no_kafka_or_worker_code(path: Path) -> None:
    """The module imports nothing from the stream framework, the Kafka client or the worker around the core."""
    bad = {name for name in imported(path) if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)}
    assert bad == set()


def test_the_check_sees_imports() -> None:
    """The import scan is not vacuous: it finds the engine's own imports."""
    assert "keywatch.contract.alerts" in imported(CORE / "engine.py")
