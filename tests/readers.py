"""A model of what a reader can get out of an output, for the redaction tests: JSON decoding, JSON escapes undone
by hand, percent-decoding (with and without `+` as a blank), in any order."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, unquote_plus

import orjson

_UNESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|(.))", re.DOTALL)
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def unescape(text: str) -> str:
    """JSON's backslash escapes undone (surrogate pairs joined), as a reader might do by hand."""

    def one(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return chr(int(match.group(1), 16))
        return _SIMPLE.get(match.group(2), match.group(2))

    return _UNESCAPE.sub(one, text).encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def readings(blob: bytes) -> set[str]:
    """Everything a reader can get out of `blob`: the text, its JSON strings (when it is JSON), and those with
    JSON escapes undone, percent-decoding (with and without `+` as a blank), in any order, three steps deep."""
    text = blob.decode("utf-8", "replace")
    seen = {text}
    with contextlib.suppress(orjson.JSONDecodeError):
        seen.update(_strings(orjson.loads(blob)))
    frontier = set(seen)
    for _ in range(3):
        frontier = {f(t) for t in frontier for f in (unescape, unquote, unquote_plus)} - seen
        seen |= frontier
    return seen


def recoverable(cores: Iterable[str], blobs: dict[str, list[bytes]]) -> list[str]:
    """Where one of `cores` (or its last 12 characters) can be read back from the named outputs."""
    found = []
    for where, items in blobs.items():
        for blob in items:
            for reading in readings(blob):
                for core in cores:
                    if core in reading or core[-12:] in reading:
                        found.append(f"{where}: {core!r} in {reading[:300]!r}")
    return found
