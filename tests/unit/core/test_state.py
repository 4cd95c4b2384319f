"""Key state (de)serialisation: the changelog format, field by field, and the round trip."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
from coretest import MINUTE, T0
from hypothesis import given, strategies

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.engine import Engine
from keywatch.core.state import KeyRegistryEntry, KeyState

FIELDS = dataclasses.fields(KeyRegistryEntry)


def generic_to_dict(entry: KeyRegistryEntry) -> dict[str, Any]:
    """The format's definition: every field not at its default, in field order."""
    return {f.name: v for f in FIELDS if (v := getattr(entry, f.name)) != f.default}


def _value(field: dataclasses.Field[Any]) -> strategies.SearchStrategy[Any]:
    if field.name == "status":
        return strategies.sampled_from(["unknown", "active", "revoked"])
    if field.name == "requests" or field.name.endswith("_ms"):
        return strategies.one_of(strategies.none(), strategies.integers(min_value=0, max_value=2**53))
    return strategies.one_of(strategies.none(), strategies.text(max_size=12))


entries = strategies.fixed_dictionaries({f.name: _value(f) for f in FIELDS}).map(
    lambda values: KeyRegistryEntry(**{k: (0 if k == "requests" and v is None else v) for k, v in values.items()})
)


@given(entries)
def test_registry_to_dict_is_the_generic_form_byte_for_byte(entry: KeyRegistryEntry) -> None:
    """The written-out `to_dict` gives the same keys, values and order as the field loop it replaced."""
    assert orjson.dumps(entry.to_dict()) == orjson.dumps(generic_to_dict(entry))
    assert KeyRegistryEntry.from_dict(entry.to_dict()) == entry


def test_registry_to_dict_writes_every_field() -> None:
    """With no field at its default every field is written, in field order (a new field must be added)."""
    entry = KeyRegistryEntry(**{f.name: ("active" if f.name == "status" else 1) for f in FIELDS})
    assert list(entry.to_dict()) == [f.name for f in FIELDS]


def test_registry_from_dict_ignores_unknown_fields() -> None:
    """A state written by a newer version loads: fields this version does not know are dropped."""
    entry = KeyRegistryEntry.from_dict({"status": "active", "requests": 3, "colour": "blue"})
    assert entry == KeyRegistryEntry(status="active", requests=3)


def test_state_round_trip_is_byte_identical_and_copy_free(
    engine_factory: Callable[..., Engine],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """A state with every detector's part survives dumps -> loads -> from_dict -> to_dict -> dumps unchanged,
    and loading takes the decoded containers as they are."""
    engine = engine_factory(ip={"learning_seconds": 0, "learning_requests": 0})
    state = engine.on_lifecycle(None, lifecycle_factory(ts=T0 - MINUTE)).state
    for i in range(200):
        record = request_factory(ts=T0 + i * 7_000, status=401 if i % 3 else 200, ip=f"198.51.100.{i % 5}")
        state = engine.on_request(state, record).state
    state = engine.on_lifecycle(state, lifecycle_factory(type="apiKey.revoked", ts=T0 + 30 * MINUTE)).state
    state = engine.on_request(state, request_factory(ts=T0 + 40 * MINUTE, ip="203.0.113.9")).state
    raw = orjson.dumps(state.to_dict())
    data = orjson.loads(raw)
    loaded = KeyState.from_dict(data)
    assert orjson.dumps(loaded.to_dict()) == raw
    assert set(loaded.detectors) == {"ip", "rate", "err", "rev"}
    assert loaded.suppressed
    assert loaded.detectors is data["d"]
    assert loaded.suppressed is data["s"]


def test_minimal_state_loads_with_fresh_containers() -> None:
    """A state with nothing but its key gets its own empty registry, detectors and suppressions."""
    one, two = KeyState.from_dict({"t": "acme", "k": "key-1"}), KeyState.from_dict({"t": "acme", "k": "key-1", "r": {}})
    one.detectors["x"] = 1
    assert two.detectors == {}
    assert one.registry == KeyRegistryEntry()
    assert orjson.dumps(two.to_dict()) == b'{"t":"acme","k":"key-1","r":{}}'
