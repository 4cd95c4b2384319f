"""The keyed topic's wire format: what ingest writes and detect reads, and nothing else.

A keyed message is one tag byte, then the payload:
- `R` / `L`: one request or lifecycle event, as the model's JSON (the one-record form);
- `F`: a hand-off from another key's detection (`Forward`), as JSON;
- `P`: many records of one keyed-topic partition packed together, a JSON array of compact entries (`compact`),
  each ["R", ts_ms, fields...] or ["L", ts_ms, fields...], or hand-offs (`compact_forward`), each
  ["F", ts_ms, tenant, key_id, kind, payload] (detect packs the hand-offs of a keyed message per partition).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.engine import Forward

TAG_REQUEST = b"R"
TAG_LIFECYCLE = b"L"
TAG_FORWARD = b"F"
TAG_PACKED = b"P"
# A packed message holds at most this many bytes of entries (far below Kafka's 1 MB default message limit).
PACKED_MAX_BYTES = 256 * 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_REQUEST_FIELDS = (
    "tenant",
    "key_id",
    "env",
    "ip",
    "method",
    "path",
    "status",
    "latency_ms",
    "user_agent",
    "request_id",
    "origin",
    "referer",
    "sec_fetch_site",
    "sec_fetch_mode",
)
# Entries written before the browser headers were carried end at `request_id`: read them as all absent.
_REQUEST_FIELDS_V1 = 10
# Fields added later are appended (with a default): an entry written before them is shorter and still expands.
_LIFECYCLE_FIELDS = (
    "type",
    "tenant",
    "key_id",
    "name",
    "env",
    "role",
    "actor",
    "replaces_key_id",
    "ip",
    "channel",
    "mfa",
)
_LIFECYCLE_OLDEST = 9  # fields of the entries written before `channel` and `mfa`


def compact(record: RequestRecord | LifecycleEvent) -> list[Any]:
    """A validated record as a compact JSON-able list: tag, event time in epoch ms (truncated to the ms, as
    the JSON form `model_dump_json` writes it), then the fields in a fixed order (a request's trailing absent
    browser headers left out: such an entry is the one written before they existed)."""
    when = (record.ts - _EPOCH) // _MS
    if isinstance(record, RequestRecord):
        entry = ["R", when, *(getattr(record, f) for f in _REQUEST_FIELDS)]
        while len(entry) > _REQUEST_FIELDS_V1 + 2 and entry[-1] is None:  # absent trailing headers: not written
            entry.pop()
        return entry
    return ["L", when, *(getattr(record, f) for f in _LIFECYCLE_FIELDS)]


def compact_forward(fwd: Forward) -> list[Any]:
    """A hand-off as a packed entry: tag, event time in epoch ms, then its fields."""
    return ["F", fwd.ts_ms, fwd.tenant, fwd.key_id, fwd.kind, fwd.payload]


def expand(entry: list[Any]) -> RequestRecord | LifecycleEvent | Forward:
    """Inverse of `compact` and `compact_forward`, without validation: the entry was made by keywatch from a
    validated record (a request entry without the trailing browser headers, as written before they existed, has
    them absent)."""
    if entry[0] == "F":
        if len(entry) != 6:
            raise ValueError(f"packed hand-off entry with {len(entry) - 1} fields, expected 5")
        _, when, tenant, key_id, kind, payload = entry
        return _forward(tenant, key_id, kind, payload, when)
    ts = _EPOCH + timedelta(milliseconds=entry[1])
    if entry[0] == "R":
        values = [ts, *entry[2:]]
        if len(values) < len(_REQUEST_ORDER) and len(values) >= _REQUEST_FIELDS_V1 + 1:
            values += [None] * (len(_REQUEST_ORDER) - len(values))
        return _construct(RequestRecord, _REQUEST_ORDER, values)
    if entry[0] == "L":
        values = [entry[2], ts, *entry[3:]]
        if len(values) == _LIFECYCLE_OLDEST + 1:  # written before the later fields (ts is a value, not a field)
            values += [None] * (len(_LIFECYCLE_FIELDS) - _LIFECYCLE_OLDEST)
        return _construct(LifecycleEvent, _LIFECYCLE_ORDER, values)
    raise ValueError(f"packed entry with unknown tag {entry[0]!r}")


_REQUEST_ORDER = ("ts", *_REQUEST_FIELDS)  # the models' field order (their JSON order)
_LIFECYCLE_ORDER = ("type", "ts", *_LIFECYCLE_FIELDS[1:])
_Model = TypeVar("_Model", RequestRecord, LifecycleEvent)


def _construct(model: type[_Model], order: tuple[str, ...], values: list[Any]) -> _Model:
    """What `model.model_construct(**dict(zip(order, values)))` builds, at a third of its cost (detect runs it
    for every record): an instance whose `__dict__` holds the fields in the model's order, all marked as set."""
    if len(values) != len(order):
        raise ValueError(f"packed {model.__name__} entry with {len(values)} fields, expected {len(order)}")
    obj = model.__new__(model)
    _set_dict(obj, dict(zip(order, values, strict=True)))
    _set_fields_set(obj, set(order))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


# BaseModel's own slots, set through their descriptors: the models are frozen, and this is half the cost of
# `object.__setattr__` by name (checked with pydantic 2.14).
_set_dict = vars(BaseModel)["__dict__"].__set__
_set_fields_set = vars(BaseModel)["__pydantic_fields_set__"].__set__
_set_extra = vars(BaseModel)["__pydantic_extra__"].__set__
_set_private = vars(BaseModel)["__pydantic_private__"].__set__


def pack(entries: list[bytes]) -> bytes:
    """A packed message of entries already serialised (`orjson.dumps(compact(record))` each)."""
    return TAG_PACKED + b"[" + b",".join(entries) + b"]"


def unpack(value: bytes) -> list[Any]:
    """The compact entries of a packed message (`value` starts with `TAG_PACKED`)."""
    entries: list[Any] = orjson.loads(value[1:])
    return entries


def single(tag: bytes, record: RequestRecord | LifecycleEvent) -> bytes:
    """The one-record message of a validated record: its tag and its normalised JSON (producer extras gone)."""
    return tag + record.model_dump_json(exclude_none=True).encode()


def forward_message(fwd: Forward) -> bytes:
    """The keyed message of a hand-off to another key."""
    body = {"tenant": fwd.tenant, "key_id": fwd.key_id, "kind": fwd.kind, "payload": fwd.payload, "ts_ms": fwd.ts_ms}
    return TAG_FORWARD + orjson.dumps(body)


def read_forward(payload: bytes) -> Forward:
    """Inverse of `forward_message`, given the payload after the tag."""
    body = orjson.loads(payload)
    if not isinstance(body, dict) or set(body) != _FORWARD_FIELDS:
        raise ValueError("hand-off message without exactly the fields tenant, key_id, kind, payload, ts_ms")
    return _forward(body["tenant"], body["key_id"], body["kind"], body["payload"], body["ts_ms"])


_FORWARD_FIELDS = {"tenant", "key_id", "kind", "payload", "ts_ms"}


def _forward(tenant: Any, key_id: Any, kind: Any, payload: Any, ts_ms: Any) -> Forward:
    """A hand-off read back, its fields' types checked (a detector trusts them, and its state keeps them)."""
    if not (isinstance(tenant, str) and isinstance(key_id, str) and isinstance(kind, str)):
        raise ValueError("hand-off with a tenant, key id or kind that is not a string")
    if type(ts_ms) is not int or not isinstance(payload, dict):
        raise ValueError("hand-off with a time that is not an integer or a payload that is not an object")
    return Forward(tenant, key_id, kind, payload, ts_ms)


def record_tags(value: bytes) -> list[bytes]:
    """The tag of every record a keyed message carries (b"R", b"L", b"F"; many for a packed message)."""
    if value[:1] == TAG_PACKED:
        return [str(entry[0]).encode() for entry in unpack(value)]
    return [value[:1]]
