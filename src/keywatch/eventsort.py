"""Sorting replay input by event time in bounded memory: an external merge sort of the raw lines.

Runs of at most `buffer` records are sorted in memory; when the input is longer, each full run is written to a
temporary file and the runs are merged with `heapq.merge`, so at most `buffer` lines are held at once (plus one
per run while merging). The order is total and depends only on a record's content, never on where it was read:
(event time in ms, lifecycle before request, CRC-32 of the line, the line itself), so any permutation of the
same records, split into any files, comes out in the same order.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from typing import IO

DEFAULT_SORT_BUFFER = 200_000

# (ts_ms, kind, crc32, line): the sort key is the whole tuple.
Entry = tuple[int, int, int, bytes]
_HEAD = struct.Struct(">qBII")  # ts_ms, kind, crc32, line length


def entry(ts_ms: int, kind: int, line: bytes) -> Entry:
    """The sort entry of one valid line."""
    return ts_ms, kind, zlib.crc32(line), line


def _write_run(run: list[Entry], tmp: IO[bytes]) -> None:
    pack = _HEAD.pack
    for ts_ms, kind, crc, line in run:
        tmp.write(pack(ts_ms, kind, crc, len(line)))
        tmp.write(line)
    tmp.flush()
    tmp.seek(0)


def _read_run(tmp: IO[bytes]) -> Iterator[Entry]:
    size = _HEAD.size
    unpack = _HEAD.unpack
    while head := tmp.read(size):
        ts_ms, kind, crc, length = unpack(head)
        yield ts_ms, kind, crc, tmp.read(length)


@contextlib.contextmanager
def sorted_entries(entries: Iterable[Entry], buffer: int = DEFAULT_SORT_BUFFER) -> Iterator[Iterator[Entry]]:
    """`entries` in sort order, holding at most `buffer` of them in memory; temporary files go with the context.

    The input is consumed when the context is entered (all runs but the last are written out first).
    """
    if buffer < 1:
        raise ValueError("the sort buffer holds at least one record")
    with contextlib.ExitStack() as stack:
        runs: list[Iterator[Entry]] = []
        bounds: list[tuple[Entry, Entry] | None] = []  # each run's first and last entry
        run: list[Entry] = []
        for item in entries:
            run.append(item)
            if len(run) >= buffer:
                run.sort()
                tmp = stack.enter_context(tempfile.TemporaryFile(prefix="keywatch-sort-"))
                _write_run(run, tmp)
                runs.append(_read_run(tmp))
                bounds.append((run[0], run[-1]))
                run = []
        run.sort()
        runs.append(iter(run))
        bounds.append((run[0], run[-1]) if run else None)
        yield runs[0] if len(runs) == 1 else itertools.chain(*runs) if _consecutive(bounds) else heapq.merge(*runs)


def _consecutive(bounds: list[tuple[Entry, Entry] | None]) -> bool:
    """Whether runs with these (first, last) entries are in order one after the other (input already sorted, as
    `keywatch simulate` writes it): their concatenation is then the merge, without a comparison per record."""
    last: Entry | None = None
    for bound in bounds:
        if bound is None:
            continue
        if last is not None and bound[0] < last:
            return False
        last = bound[1]
    return True


def run_count(records: int, buffer: int = DEFAULT_SORT_BUFFER) -> int:
    """How many runs `records` records make (for messages: 1 means sorted in memory)."""
    return max(1, -(-records // buffer))
