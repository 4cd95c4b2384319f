"""The faust and aiokafka internals `keywatch.stream.kafka_internals` uses still exist with the shape it expects,
and no other module reaches into them (an upgrade that removes one must fail here, loudly, naming the adapter
function: not turn a readiness check silently false or a state write into an AttributeError in production)."""

from __future__ import annotations

import ast
import importlib
import inspect
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust
import pytest
from aiokafka.client import ConnectionGroup

from keywatch.stream import kafka_internals
from keywatch.stream.kafka_internals import (
    AIOKAFKA_VERSION,
    FAUST_VERSION,
    INTERNALS,
    Internal,
    changelog_topic_name,
    consumer_connected,
    faust_assignment,
    faust_producer,
    hold_stream_flow,
    set_persisted_offset,
    table_store,
)

SRC = Path(kafka_internals.__file__).parents[1]
ADAPTER = Path(kafka_internals.__file__)


def _resolve(dotted: str) -> Any:
    """A module, or a class inside one, by its dotted name."""
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError:
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)


def test_versions_are_the_ones_checked() -> None:
    """The adapter was checked against the installed faust-streaming and aiokafka: re-check it on upgrade."""
    assert version("faust-streaming") == FAUST_VERSION == faust.__version__
    assert version("aiokafka") == AIOKAFKA_VERSION == aiokafka.__version__


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda i: f"{i.owner}.{i.attribute}")
def test_every_internal_the_adapter_uses_still_exists(internal: Internal) -> None:
    """Each entry of INTERNALS is still on its owner (a member, or assigned in its source), with the parameters the
    adapter passes."""
    where = f"kafka_internals.{internal.used_by} needs {internal.owner}.{internal.attribute} ({internal.why})"
    owner = _resolve(internal.owner)
    if internal.check == "assigned":
        assert f"self.{internal.attribute} =" in inspect.getsource(owner), f"{where}: no longer assigned"
        return
    assert hasattr(owner, internal.attribute), f"{where}: gone"
    if internal.params:
        target = inspect.getattr_static(owner, internal.attribute)
        params = list(inspect.signature(getattr(target, "__func__", target)).parameters)
        assert params[: len(internal.params)] == list(internal.params), f"{where}: its parameters are now {params}"


def test_the_table_and_the_functions_agree() -> None:
    """Every public function of the adapter has entries in INTERNALS, every entry names one, and each function's
    docstring names the attributes it uses (the docs and the checked list cannot drift apart)."""
    functions = {
        name
        for name, f in vars(kafka_internals).items()
        if inspect.isfunction(f) and f.__module__ == kafka_internals.__name__ and not name.startswith("_")
    }
    assert {i.used_by for i in INTERNALS} == functions
    for internal in INTERNALS:
        doc = inspect.getdoc(getattr(kafka_internals, internal.used_by)) or ""
        assert internal.attribute in doc, f"{internal.used_by}'s docstring does not mention {internal.attribute}"


def test_the_consumer_path_list_offsets_avoids_is_still_there() -> None:
    """The reason list_offsets exists: an unknown partition makes the consumer's end_offsets name its topic in a
    metadata request (which creates it where auto.create.topics.enable is on)."""
    from aiokafka.consumer.fetcher import Fetcher

    assert "self._client.add_topic(partition.topic)" in inspect.getsource(Fetcher._proc_offset_requests)


# Underscore attributes a module may read on something other than `self`/`cls`: keywatch's own objects only.
# Empty today; an entry here needs a reason, and must never be a faust or aiokafka object (that goes in the adapter).
OWN_PRIVATE_ACCESSES: frozenset[tuple[str, str]] = frozenset()

# Public-looking internals of INTERNALS whose names are common words keywatch uses on its own objects too
# (`alert.data`, aiokafka's public `AIOKafkaConsumer.assignment()` in ingest, `Metrics`...): not searched by name.
COMMON_NAMES = frozenset({"data", "assignment", "connected", "COORDINATION", "coordinator_id"})


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p != ADAPTER)


def _private_accesses(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, base, attribute) of every `x._name` (not a dunder) whose base is not `self` or `cls`, and of every
    getattr/setattr/hasattr with a literal underscore name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = ast.unparse(node.value)
            if base not in ("self", "cls"):
                found.append((node.lineno, base, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and node.args[1].value.startswith("_")
        ):
            found.append((node.lineno, ast.unparse(node.args[0]), node.args[1].value))
    return sorted(found)


def test_only_the_adapter_reaches_into_private_attributes() -> None:
    """Outside stream/kafka_internals.py, src/ reads underscore attributes only on `self`/`cls` (keywatch's own
    objects), imports no underscore name from faust or aiokafka, and names none of the adapter's public-looking
    internals (`stop_flow`, `changelog_topic`...; the private ones are covered by the first rule).

    A heuristic, by the syntax tree: a private attribute of a faust or aiokafka object is reached through some
    expression other than `self`/`cls` (`app.producer._ensure_producer()`), or through `self._x._y`, both caught.
    A keywatch object's own private attribute read from outside would be caught too: list it in
    OWN_PRIVATE_ACCESSES with a reason.
    """
    distinctive = {i.attribute for i in INTERNALS if not i.attribute.startswith("_")} - COMMON_NAMES
    offences = []
    for path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(SRC.parent)
        for line, base, attr in _private_accesses(tree):
            if (str(rel), attr) not in OWN_PRIVATE_ACCESSES:
                offences.append(f"{rel}:{line}: {base}.{attr}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("faust", "aiokafka", "mode"):
                for alias in node.names:
                    if alias.name.startswith("_") or alias.name in distinctive:
                        offences.append(f"{rel}:{node.lineno}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Attribute) and node.attr in distinctive:
                offences.append(f"{rel}:{node.lineno}: .{node.attr} (use keywatch.stream.kafka_internals)")
    assert offences == []


def test_the_heuristic_catches_what_it_is_for() -> None:
    """The private-access scan flags a faust object's private attribute and a chained one, and not `self._x`."""
    tree = ast.parse("app.producer._ensure_producer()\nself._consumer._coordinator\nself._x = 1\ngetattr(a, '_b')\n")
    assert [(base, attr) for _, base, attr in _private_accesses(tree)] == [
        ("app.producer", "_ensure_producer"),
        ("self._consumer", "_coordinator"),
        ("a", "_b"),
    ]


def _app(coordinator_id: int | None, connected: bool | None) -> Any:
    conns = (
        {} if connected is None else {(3, ConnectionGroup.COORDINATION): SimpleNamespace(connected=lambda: connected)}
    )
    consumer = SimpleNamespace(
        _coordinator=SimpleNamespace(coordinator_id=coordinator_id), _client=SimpleNamespace(_conns=conns)
    )
    return SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=consumer)))


def test_consumer_connected_reads_the_coordinator_connection() -> None:
    """Connected only with a known coordinator whose coordination connection is open; a missing attribute is False."""
    assert consumer_connected(_app(3, True)) is True
    assert consumer_connected(_app(3, False)) is False
    assert consumer_connected(_app(3, None)) is False
    assert consumer_connected(_app(None, True)) is False
    assert consumer_connected(SimpleNamespace(consumer=SimpleNamespace())) is False


def test_the_table_functions_work_on_a_real_faust_table() -> None:
    """On an (unstarted) faust app: the table's store, its changelog name, the persisted offset recorded in it."""
    app = faust.App("kw-internals-test", store="memory://", web_enabled=False)
    table = app.Table("keys", partitions=2, key_type=bytes, value_type=bytes)
    store = table_store(table)
    store[b"acme/k1"] = b"state"
    assert dict(store.items()) == {b"acme/k1": b"state"}
    assert table.get(b"acme/k1") == b"state"  # the same store faust's table reads
    assert changelog_topic_name(table) == "kw-internals-test-keys-changelog"
    set_persisted_offset(table, changelog_topic_name(table), 1, 41)  # memory:// does not persist: no error
    assert kafka_internals.faust_internal_topics(app) == [
        "kw-internals-test-keys-changelog",
        "kw-internals-test-__assignor-__leader",
    ]


def test_the_producer_and_consumer_functions_reach_faust_objects() -> None:
    """On an (unstarted) faust app: its producer and its consumer's assignment say they are not started (what
    TableView and the lag probe expect before faust runs); the consumer's flow can be held."""
    from faust.exceptions import ConsumerNotStarted, NotReady

    app = faust.App("kw-internals-test-2", web_enabled=False)
    with pytest.raises(NotReady):
        faust_producer(app)
    with pytest.raises(ConsumerNotStarted):
        faust_assignment(app)
    assert app.consumer.flow_active is True
    hold_stream_flow(app)
    assert app.consumer.flow_active is False
    app.consumer._thread.thread_loop.close()  # the consumer thread's own loop, never started
