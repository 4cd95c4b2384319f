"""JSONL inputs for the offline commands: plain or gzip files (told apart by their first bytes) or `-` for stdin,
read line by line with a bound on a line's length.
"""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

GZIP_MAGIC = b"\x1f\x8b"
STDIN = "-"
# A line longer than this is cut here; the cut line is still longer than any record may be
# (parsing.DEFAULT_MAX_RECORD_BYTES), so it is rejected as oversize instead of being held whole in memory.
MAX_LINE_BYTES = 1024 * 1024


class InputError(ValueError):
    """An input cannot be read (missing, unreadable, corrupt gzip); the message is one line naming it."""


def describe(source: str) -> str:
    """How a source is named in messages."""
    return "stdin" if source == STDIN else source


def check_sources(sources: list[str]) -> None:
    """Fail early, in one line, for a source that cannot be opened or is given twice as stdin."""
    if sum(s == STDIN for s in sources) > 1:
        raise InputError("stdin (-) can be given as at most one input")
    for source in sources:
        if source == STDIN:
            continue
        path = Path(source)
        if not path.exists():
            raise InputError(f"{source}: no such file")
        if path.is_dir():
            raise InputError(f"{source}: is a directory, not a file")
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise InputError(f"{source}: cannot be read ({exc.strerror or exc})") from None


def _open(source: str) -> IO[bytes]:
    if source == STDIN:
        return sys.stdin.buffer
    try:
        return Path(source).open("rb")
    except OSError as exc:
        raise InputError(f"{source}: cannot be read ({exc.strerror or exc})") from None


def _long_line_rest(fh: IO[bytes], line: bytes) -> None:
    """Skip what is left of a cut line, up to and including its newline."""
    while line and not line.endswith(b"\n"):
        line = fh.readline(MAX_LINE_BYTES)


def _lines(fh: IO[bytes], source: str) -> Iterator[bytes]:
    number = 0
    try:
        while True:
            line = fh.readline(MAX_LINE_BYTES)
            if not line:
                return
            number += 1
            if len(line) >= MAX_LINE_BYTES and not line.endswith(b"\n"):
                _long_line_rest(fh, line)
            yield line
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        detail = str(exc) or type(exc).__name__
        raise InputError(f"{describe(source)}: corrupt or truncated gzip after {number} lines ({detail})") from None
    except OSError as exc:
        raise InputError(f"{describe(source)}: read failed after {number} lines ({exc.strerror or exc})") from None


def read_lines(source: str) -> Iterator[bytes]:
    """The lines of `source` (a path or `-`), gunzipped when it starts with the gzip magic bytes.

    A line longer than `MAX_LINE_BYTES` is yielded cut to that length; a corrupt or truncated gzip stream raises
    `InputError` after the lines before the damage.
    """
    raw = _open(source)
    try:
        # peek needs a buffered reader; stdin is one (a test's stdin is a BytesIO, in memory already).
        buffered: IO[bytes] = raw
        head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
        if not isinstance(raw, io.BufferedReader):
            data = io.BytesIO(raw.read())
            head, buffered = data.getvalue()[:2], data
        fh = cast("IO[bytes]", gzip.GzipFile(fileobj=buffered, mode="rb")) if head == GZIP_MAGIC else buffered
        yield from _lines(fh, source)
    finally:
        if source != STDIN:
            raw.close()
