"""The worker's tick index (pipeline/ticks.py): per-partition watermarks, keys with pending ticks, the rebuild."""

from __future__ import annotations

from keywatch.core.codec import encode_state
from keywatch.core.state import KeyState
from keywatch.pipeline.ticks import TickIndex


def _stored(key_id: str, **ticks: int) -> tuple[bytes, bytes]:
    return f"acme/{key_id}".encode(), encode_state(KeyState("acme", key_id, ticks=ticks))


def test_a_key_is_due_once_the_partitions_watermark_reaches_its_tick() -> None:
    """Due means tick time <= watermark, each key once, and only in the partition it was noted in."""
    index = TickIndex()
    index.note(0, b"acme/k1", 1_000)
    index.note(0, b"acme/k1", 1_000)
    index.note(1, b"acme/k2", 500)
    index.advance(0, 999)
    assert index.due(0) == []
    index.advance(0, 1_000)
    assert index.due(0) == [b"acme/k1"]
    assert index.due(0) == []
    assert index.due(1) == []  # partition 1 has no watermark yet


def test_watermark_never_goes_back() -> None:
    """An older event time seen later leaves the watermark where it was."""
    index = TickIndex()
    assert index.advance(0, 5_000) == 5_000
    assert index.advance(0, 1_000) == 5_000


def test_rebuild_indexes_every_pending_tick_of_the_table() -> None:
    """After a rebuild every partition counts as indexed and each state's earliest tick is in it."""
    index = TickIndex()
    table = dict([_stored("k1", toy=3_000, other=2_000), _stored("k2"), (b"acme/bad", b"\xc1")])
    index.rebuild(table.items(), lambda key: 0 if key == b"acme/k1" else 1)
    assert index.knows(0)
    assert index.knows(7)
    index.advance(0, 2_000)
    assert index.due(0) == [b"acme/k1"]


def test_index_partition_takes_only_that_partitions_keys() -> None:
    """Indexing a partition seen for the first time skips the keys of other partitions."""
    index = TickIndex()
    table = dict([_stored("k1", toy=10), _stored("k2", toy=10)])
    index.index_partition(1, table.items(), lambda key: 1 if key == b"acme/k2" else 0)
    assert (index.knows(1), index.knows(0)) == (True, False)
    index.advance(1, 10)
    assert index.due(1) == [b"acme/k2"]


def test_a_tick_noted_again_at_the_same_time_is_indexed_once() -> None:
    """A state written on every record with the same pending tick (a timer weeks away) adds one heap entry; a
    moved tick adds its own, and once due the key can be noted again at that time."""
    index = TickIndex()
    for _ in range(1000):
        index.note(0, b"acme/k1", 9_000)
    assert len(index._heaps[0]) == 1
    index.note(0, b"acme/k1", 4_000)  # moved earlier: its own entry; the old one is stale
    index.advance(0, 4_000)
    assert index.due(0) == [b"acme/k1"]
    index.note(0, b"acme/k1", 4_000)  # noted again after it came due: indexed again
    assert index.due(0) == [b"acme/k1"]
    index.advance(0, 9_000)
    assert index.due(0) == [b"acme/k1"]
    assert index._heaps[0] == []
