"""Hygiene status bits: detectors' checks folded into the registry entry the worker stores, counted from the
registry entries alone."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from keywatch.core import hygiene
from keywatch.core.codec import decode_state, encode_state, peek
from keywatch.core.state import KeyRegistryEntry, KeyState
from keywatch.pipeline.state_store import save


def _overdue(state: KeyState) -> bool:
    return state.registry.role == "old"


def _stalled(state: KeyState) -> bool:
    return state.registry.name == "stalled"


@pytest.fixture
def checks() -> Iterator[None]:
    hygiene.register("overdue", _overdue)
    hygiene.register("stalled", _stalled)
    yield
    hygiene.unregister("overdue", _overdue)
    hygiene.unregister("stalled", _stalled)


def test_bits_fold_every_check_and_a_tenant_state_has_none(checks: None) -> None:
    """A key in two statuses has both bits; a tenant's state (empty key id) is never in a status."""
    key = KeyState("acme", "k1", KeyRegistryEntry(role="old", name="stalled"))
    assert hygiene.bits(key) == hygiene.BIT["overdue"] | hygiene.BIT["stalled"]
    assert hygiene.bits(KeyState("acme", "k2")) == 0
    assert hygiene.bits(KeyState("acme", "", KeyRegistryEntry(role="old"))) == 0


def test_the_stored_state_carries_its_bits_and_peek_reads_them(checks: None) -> None:
    """`save` writes the bits into the registry entry; `peek` (no detector state decoded) gives them back, and a
    change of status is written with the next save."""
    store: dict[bytes, bytes] = {}
    key = KeyState("acme", "k1", KeyRegistryEntry(role="old"))
    save(store, b"acme/k1", key)
    assert peek(store[b"acme/k1"])[0].hygiene == hygiene.BIT["overdue"]
    key.registry.role = "new"
    save(store, b"acme/k1", key)
    assert peek(store[b"acme/k1"])[0].hygiene == 0


def test_counts_per_status_over_registry_entries() -> None:
    """Every status is in the counts (0 when no key is in it); a key in two statuses counts in both."""
    entries = [
        KeyRegistryEntry(hygiene=hygiene.BIT["overdue"]),
        KeyRegistryEntry(hygiene=hygiene.BIT["overdue"] | hygiene.BIT["unused"]),
        KeyRegistryEntry(),
    ]
    assert hygiene.count(entries) == {"overdue": 2, "unused": 1, "rotation_in_progress": 0, "stalled": 0}


def test_a_state_written_before_the_field_existed_reads_as_no_status() -> None:
    """The registry entry's trailing `hygiene` field has a default: a stored state without it still loads."""
    older = list(msgspec.structs.astuple(KeyRegistryEntry(status="active", requests=3)))[:-1]
    state = KeyState("acme", "k1")
    raw = bytearray(encode_state(state))
    decoded = msgspec.msgpack.decode(bytes(raw))
    decoded[3] = older
    reread = decode_state(msgspec.msgpack.encode(decoded))
    assert (reread.registry.status, reread.registry.requests, reread.registry.hygiene) == ("active", 3, 0)


def test_an_unknown_status_is_refused() -> None:
    """A check registered for a status that does not exist is a programming error, said at once."""
    with pytest.raises(ValueError, match="unknown hygiene status 'stale'"):
        hygiene.register("stale", _overdue)


def test_every_status_is_decided_by_a_registered_detector() -> None:
    """The hygiene detectors register their checks: no status gauge is always 0 by omission."""
    from keywatch.core import catalog  # noqa: F401  (importing the catalog imports every detector)

    assert all(hygiene._checks[status] for status in hygiene.STATUSES)
