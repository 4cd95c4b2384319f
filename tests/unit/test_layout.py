"""The rooms of src/keywatch and what each may import, read from the source with `ast`; the README's table of
rooms ("How it works") says the same as `ROOMS` here, the one statement of the rules."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "keywatch"
README = REPO / "README.md"
FRAMEWORK = ("faust", "mode", "aiokafka")  # the stream framework and the Kafka client (mode is faust's runtime)


@dataclass(frozen=True)
class Room:
    """A package of src/keywatch and the modules it must never import (prefixes of absolute module names)."""

    package: str
    never: tuple[str, ...]


_WORKER = ("keywatch.stream", "keywatch.cli")
ROOMS = (
    Room("contract", (*FRAMEWORK, "keywatch.core", "keywatch.pipeline", "keywatch.sinks", "keywatch.sim", *_WORKER)),
    Room("core", (*FRAMEWORK, "keywatch.pipeline", "keywatch.sinks", *_WORKER)),
    Room("pipeline", (*FRAMEWORK, "keywatch.sim", *_WORKER)),
    Room("sinks", ("faust", "mode", "keywatch.pipeline", *_WORKER)),
    Room("stream", ("keywatch.sim", "keywatch.cli")),
    Room("sim", ("faust", "mode", "keywatch.pipeline", "keywatch.sinks", *_WORKER)),
    Room("cli", ()),
)
# faust itself only where the worker is built and started: the stream adapter, the CLI, and security.py, which
# turns the settings into faust's and aiokafka's credentials.
FAUST_ALLOWED = ("stream/", "cli/", "security.py")


def imported(path: Path) -> set[str]:
    """Every module a source file imports (absolute names; relative imports resolved against its package)."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            names.add(".".join([*base, *([node.module] if node.module else [])]))
    return names


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("room", ROOMS, ids=lambda r: r.package)
def test_room_imports_nothing_it_must_not(room: Room) -> None:
    """No module of the room imports a module the room must never import."""
    bad = {
        f"{path.relative_to(SRC)}: {name}"
        for path in _modules(room.package)
        for name in imported(path)
        if any(_matches(name, prefix) for prefix in room.never)
    }
    assert bad == set()


def test_only_the_worker_imports_faust() -> None:
    """faust (and its runtime, mode) is imported only by the stream adapter and the entry points of the worker."""
    users = {
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if any(_matches(name, f) for name in imported(path) for f in ("faust", "mode"))
    }
    assert users
    assert {u for u in users if not u.startswith(FAUST_ALLOWED)} == set()


def test_every_package_is_a_room() -> None:
    """A new package of src/keywatch gets its rules here (and its row in the README) before it lands."""
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert packages == {room.package for room in ROOMS}


def test_the_check_sees_imports() -> None:
    """The import scan is not vacuous: it finds the engine's own imports, absolute and relative."""
    assert "keywatch.contract.alerts" in imported(SRC / "core" / "engine.py")
    assert "keywatch.pipeline.wire" in imported(SRC / "pipeline" / "detect.py")
    assert "aiokafka" in imported(SRC / "stream" / "ingest.py")


# -- the README's table of rooms ------------------------------------------------------------------------------


def readme_rooms() -> dict[str, tuple[set[str], set[str]]]:
    """The README's table of rooms: per package, the packages it says the room may import and what it never does."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## How it works", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("**"):
            continue
        package = cells[0].strip("*")
        may = set(re.findall(r"`([a-z_.]+)`", cells[3]))
        never = set(re.findall(r"`([a-z_.]+)`", cells[4]))
        rows[package] = (may, never)
    return rows


def test_readme_names_every_room_with_its_rules() -> None:
    """The README's table has a row per room, and its "never imports" column is the room's rule here."""
    rows = readme_rooms()
    assert set(rows) == {room.package for room in ROOMS}
    for room in ROOMS:
        assert rows[room.package][1] == set(room.never), room.package


@pytest.mark.parametrize("room", ROOMS, ids=lambda r: r.package)
def test_readme_names_every_room_a_room_imports(room: Room) -> None:
    """The "may import" column names every other package the room's code imports, and none it must never."""
    may, never = readme_rooms()[room.package]
    packages = {room.package for room in ROOMS}
    used = {
        name.split(".")[1]
        for path in _modules(room.package)
        for name in imported(path)
        if name.startswith("keywatch.") and name.split(".")[1] in packages
    } - {room.package}
    assert used <= {m.removeprefix("keywatch.") for m in may}
    assert not {f"keywatch.{m.removeprefix('keywatch.')}" for m in may} & never
