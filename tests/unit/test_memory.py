"""release_free_memory gives freed heap pages back (glibc, as on the worker's images and this machine)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from keywatch.core.codec import encode_state
from keywatch.core.ip_baseline import IpState, RangeSeen
from keywatch.core.state import KeyState
from keywatch.memory import release_free_memory


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_freed_state_sized_blocks_go_back_to_the_os() -> None:
    base = _rss()
    # what the table does to the heap: ~1 KB values, most of them replaced (freed) while some stay
    blobs = [b"".join((b"x" * (900 + i % 200), b"")) for i in range(200_000)]
    kept = blobs[::10]
    del blobs
    held = _rss() - base
    took = release_free_memory()
    released = held - (_rss() - base)
    assert took is not None
    assert took < 5.0
    assert len(kept) == 20_000
    assert released > held / 4, f"held {held} bytes, released {released}"


def test_encoded_states_hold_only_their_own_bytes() -> None:
    """The table keeps one encoded state per key: each must cost about its length, not the encoder's buffer
    (orjson's own output kept ~8 KB for a ~850 B state; msgspec's keeps ~45 % more than it wrote)."""
    ranges = {f"10.0.{i}.0/24": RangeSeen(i, i + 1, 1, None, None) for i in range(40)}
    state = KeyState("acme", "key_live_1", detectors={"ip": IpState(ranges, {}, {})})
    size = len(encode_state(state))
    assert 500 < size < 2000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encode_state(state) for _ in range(1000)]
        per_state = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_state < size + 128, f"{per_state:.0f} bytes held per {size}-byte state"
