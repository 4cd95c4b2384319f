"""release_free_memory gives freed heap pages back (glibc, as on the worker's images and this machine)."""

from __future__ import annotations

from pathlib import Path

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
