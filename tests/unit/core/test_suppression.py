"""Suppression table: per (key, type, discriminator), expired by event time, bounded."""

from __future__ import annotations

from keywatch.core.state import KeyState
from keywatch.core.suppression import expire, is_suppressed, suppress, suppression_key


def test_suppressed_until_expiry_by_event_time() -> None:
    """An entry keeps alerts quiet strictly before its until time."""
    state = KeyState(tenant="acme", key_id="key-1")
    suppress(state, suppression_key("apiKey.usedFromNewIp", "192.0.2.0/24"), now_ms=0, until_ms=1000)
    assert is_suppressed(state, "usedfromnewip|192.0.2.0/24", 999)
    assert not is_suppressed(state, "usedfromnewip|192.0.2.0/24", 1000)
    assert not is_suppressed(state, "usedfromnewip|198.51.100.0/24", 0)


def test_suppress_never_shortens() -> None:
    """A shorter suppression for the same key leaves the longer one."""
    state = KeyState(tenant="acme", key_id="key-1")
    suppress(state, "rev", now_ms=0, until_ms=5000)
    suppress(state, "rev", now_ms=10, until_ms=100)
    assert state.suppressed == {"rev": 5000}


def test_table_is_bounded_and_expired_entries_go() -> None:
    """Expired entries are dropped on write; past the cap the soonest-expiring entries go."""
    state = KeyState(tenant="acme", key_id="key-1")
    for i in range(100):
        suppress(state, f"nip|{i}", now_ms=i, until_ms=1000 + i, max_entries=8)
    assert len(state.suppressed) == 8
    assert min(state.suppressed.values()) == 1092
    expire(state, 2000)
    assert state.suppressed == {}
