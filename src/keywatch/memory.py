"""Give heap memory the worker has freed back to the operating system; tune the cyclic garbage collector.

The table replaces each key's state (~1 KB, allocated by glibc's malloc, not Python's small-object allocator)
on every write; the freed blocks are reused but glibc keeps the pages, so the resident set grows well past what
is live. Measured on a 2,000,000-record / 100,000-key bench run: 388 MB resident, 233 MB after `malloc_trim(0)`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    return trim


def release_free_memory() -> float | None:
    """`malloc_trim(0)`: return freed heap pages to the OS; the seconds it took, or None where not available."""
    trim = _malloc_trim()
    if trim is None:
        return None
    started = time.perf_counter()
    trim(0)
    took = time.perf_counter() - started
    if took > 0.1:
        log.info("malloc_trim took %.0f ms", took * 1000)
    return took


# The cyclic collector's thresholds for a long-running keywatch process: a collection of the youngest generation
# every 10,000 net allocations (Python's default: 700), the older ones every 20 of the one below (default 10).
# Decoding a key's state allocates hundreds to thousands of objects, so with the defaults the collector ran
# every few states and its full collections walked every state held (measured: half of a worker's CPU on the
# bench's 100k-key mix). keywatch's states hold no reference cycles; what cycles there are (asyncio, the
# Kafka clients) are still collected, later.
GC_THRESHOLDS = (10_000, 20, 20)


def tune_gc() -> None:
    """Freeze what start-up built (modules, models, settings: never garbage, no longer scanned) and set
    `GC_THRESHOLDS`; once per process (a later call does nothing), when it is set up, before it processes records."""
    if gc.get_threshold() == GC_THRESHOLDS:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
