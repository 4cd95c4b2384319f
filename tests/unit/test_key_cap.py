"""KeyCap against a plain reference: the keys it keeps are the most recently seen ones, per partition."""

from __future__ import annotations

import msgspec
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from keywatch.core.codec import encode_state, peek
from keywatch.core.state import KeyRegistryEntry, KeyState
from keywatch.pipeline.keycap import KeyCap, recency, registry_recency


class ReferenceCap:
    """What KeyCap promises, written the slow way: evict the least recently seen keys (ties: smaller key) of the
    touched key's partition until it is back at the cap, never the key just touched."""

    def __init__(self, per_partition: int) -> None:
        self.per_partition = per_partition
        self.recency: dict[int, dict[bytes, int]] = {}

    def touch(self, key: bytes, when_ms: int, partition: int) -> list[bytes]:
        rec = self.recency.setdefault(partition, {})
        rec[key] = when_ms
        evicted = []
        while len(rec) > self.per_partition:
            victim = min((t, k) for k, t in rec.items() if k != key)[1]
            del rec[victim]
            evicted.append(victim)
        return evicted


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(min_value=1, max_value=12),
    touches=st.lists(
        st.tuples(st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=50)), max_size=300
    ),
)
def test_key_cap_evicts_what_the_reference_evicts(cap: int, touches: list[tuple[int, int]]) -> None:
    index = KeyCap(cap * 2, 2)
    index.stale = False
    reference = ReferenceCap(index.per_partition)
    for key_no, when in touches:
        key = f"acme/k{key_no}".encode()
        partition = index.partition_of(key)
        assert sorted(index.touch(key, when, partition)) == sorted(reference.touch(key, when, partition))
        assert len(index) == sum(len(r) for r in reference.recency.values())
    for partition, heap in index._heaps.items():  # stale entries are dropped now and then: bounded
        assert len(heap) <= 2 * len(index._recency[partition]) + 64 + 1


def test_no_heap_below_the_cap() -> None:
    """Below the cap (the normal case) a partition's index is a dict: no eviction heap is built."""
    index = KeyCap(1000, 1)
    index.stale = False
    for i in range(500):
        assert index.touch(f"acme/k{i}".encode(), i, 0) == []
        assert index.touch(f"acme/k{i}".encode(), i + 1, 0) == []
    assert index._heaps == {}
    assert len(index) == 500


@settings(max_examples=100, deadline=None)
@given(
    times=st.lists(st.one_of(st.none(), st.integers(min_value=0, max_value=2**45)), min_size=4, max_size=4),
    requests=st.integers(min_value=0, max_value=10),
)
def test_registry_recency_reads_what_recency_reads_from_the_serialised_entry(
    times: list[int | None], requests: int
) -> None:
    """detect computes recency from the decoded entry, a rebuild from the stored state (either format): the same
    order."""
    last_seen, created, revoked, role_changed = times
    entry = KeyRegistryEntry(
        last_seen_ms=last_seen,
        created_ms=created,
        revoked_ms=revoked,
        role_changed_ms=role_changed,
        first_seen_ms=2**46,  # not a recency field: must not count
        requests=requests,
    )
    stored = encode_state(KeyState("acme", "key-1", entry))
    assert registry_recency(entry) == registry_recency(peek(stored)[0])
    first_format = {k: v for k, v in msgspec.structs.asdict(entry).items() if v is not None}
    assert registry_recency(entry) == recency(orjson.loads(orjson.dumps(first_format)))
