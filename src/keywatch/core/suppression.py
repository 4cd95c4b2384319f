"""Alert suppression per (key, alert type, discriminator), kept in `KeyState.suppressed` and expired by event time.

Entries are `"<type slot>|<discriminator>" -> until_ms`, the type slot being the type's runbook anchor
(`usedfromnewip`); open episodes (`KeyState.episodes`) are keyed the same way. The table is bounded: expired
entries are dropped whenever one is added (alerts are rare, so this stays off the per-request path), and past
the cap the entry that expires soonest goes first.
"""

from __future__ import annotations

from keywatch.core.state import KeyState

DEFAULT_MAX_ENTRIES = 64


def suppression_key(alert_type: str, discriminator: str = "") -> str:
    """The table key for an alert type and what distinguishes one incident of it from another."""
    code = alert_type.split(".", 1)[-1].lower()
    return f"{code}|{discriminator}" if discriminator else code


def is_suppressed(state: KeyState, key: str, now_ms: int) -> bool:
    """Whether alerts under `key` are quiet at event time `now_ms`."""
    until = state.suppressed.get(key)
    return until is not None and now_ms < until


def suppress(state: KeyState, key: str, *, now_ms: int, until_ms: int, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
    """Keep alerts under `key` quiet until `until_ms`; never shortens an existing suppression."""
    table = state.suppressed
    current = table.get(key)
    if current is not None and current >= until_ms:
        return
    table[key] = until_ms
    expire(state, now_ms)
    while len(table) > max_entries:
        del table[min(table, key=table.__getitem__)]


def expire(state: KeyState, now_ms: int) -> None:
    """Drop every entry that has expired by event time `now_ms`."""
    table = state.suppressed
    for key in [k for k, until in table.items() if until <= now_ms]:
        del table[key]
