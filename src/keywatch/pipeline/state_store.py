"""The glue between the state table and the typed state: a key's table value is its `KeyState` encoded by
`core/codec.py`; detect reads and writes states only through here.

The table is any `MutableMapping[bytes, bytes]` keyed `<tenant>/<key_id>` (a dict in tests and replay, the faust
table in the worker), so nothing here knows faust.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from keywatch.core import hygiene
from keywatch.core.codec import decode_state, encode_state
from keywatch.core.state import KeyState


def load(store: Mapping[bytes, bytes], key: bytes) -> KeyState | None:
    """The state `key` has in `store`, decoded; None for a key without state."""
    raw = store.get(key)
    return decode_state(raw) if raw else None


def save(store: MutableMapping[bytes, bytes], key: bytes, state: KeyState) -> None:
    """Write `key`'s state to `store`, encoded (one table write: one changelog record in the worker), with its
    hygiene status bits (`keywatch.core.hygiene`) brought up to date in its registry entry."""
    state.registry.hygiene = hygiene.bits(state)
    store[key] = encode_state(state)
