"""Malformed input records, one per way a producer can get it wrong, with the rejection each must get.

Shared by the unit tests of parsing and the integration test against the real broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from tests.factories import lifecycle_dict, request_dict


@dataclass(frozen=True)
class Bad:
    """One malformed record: which input topic, its bytes, the expected reason code and a reason fragment."""

    name: str
    kind: str  # "requests" | "lifecycle"
    value: bytes | None
    code: str
    fragment: str


def _req(**overrides: object) -> bytes:
    return orjson.dumps(request_dict(**overrides))


def _life(**overrides: object) -> bytes:
    return orjson.dumps(lifecycle_dict(**overrides))


def malformed(now: datetime | None = None) -> list[Bad]:
    """The corpus; `now` anchors the too-far-in-the-future case."""
    now = now or datetime.now(UTC)
    future = (now + timedelta(days=2)).isoformat().replace("+00:00", "Z")
    nested = b"[" * 5000 + b"]" * 5000
    return [
        Bad("not json", "requests", b"{this is not json", "json", "not valid JSON"),
        Bad("invalid utf-8", "requests", b'{"ts": "\xff\xfe"}', "encoding", "not valid UTF-8"),
        Bad("json array", "requests", b"[1, 2, 3]", "not_object", "must be a JSON object, got list"),
        Bad("json string", "requests", b'"hello"', "not_object", "got str"),
        Bad("json null", "lifecycle", b"null", "not_object", "got NoneType"),
        Bad("empty value", "requests", b"", "json", "not valid JSON"),
        Bad("tombstone", "lifecycle", None, "json", "no value"),
        Bad("deep nesting", "requests", nested, "json", "not valid JSON"),
        Bad("missing ts", "requests", _req(ts=None), "schema", "field `ts` is required"),
        Bad("boolean ts", "requests", _req(ts=True), "timestamp", "not a boolean"),
        Bad("ts without offset", "requests", _req(ts="2026-01-05T12:00:00"), "timestamp", "no UTC offset"),
        Bad("ts garbage", "requests", _req(ts="yesterday"), "timestamp", "not an RFC 3339 time"),
        Bad("ts in 1970", "requests", _req(ts=5), "timestamp", "outside the plausible range"),
        Bad("ts in 2150", "lifecycle", _life(ts="2150-01-01T00:00:00Z"), "timestamp", "outside the plausible range"),
        Bad("ts ahead of clock", "requests", _req(ts=future), "timestamp", "ahead of keywatch's clock"),
        Bad("ip out of range", "requests", _req(ip="300.1.1.1"), "ip", "'300.1.1.1' is not an IP address"),
        Bad("ip hostname", "requests", _req(ip="api.example.com"), "ip", "is not an IP address"),
        Bad("ip as number", "requests", _req(ip=3232235777), "ip", "valid string"),
        Bad("ip with port", "lifecycle", _life(ip="198.51.100.7:443"), "ip", "is not an IP address"),
        Bad("unknown env", "requests", _req(env="prod"), "env", "'sandbox' or 'live'"),
        Bad("status as string", "requests", _req(status="200"), "schema", "field `status`"),
        Bad("status out of range", "requests", _req(status=700), "schema", "less than or equal to 599"),
        Bad("tenant with slash", "requests", _req(tenant="acme/evil"), "key", "field `tenant`"),
        Bad("empty key_id", "requests", _req(key_id=""), "key", "field `key_id`"),
        Bad("key_id wrong type", "lifecycle", _life(key_id=["k"]), "key", "field `key_id`"),
        Bad("oversize path", "requests", _req(path="/" + "a" * 5000), "schema", "field `path`"),
        Bad("oversize record", "requests", _req(user_agent="x" * 70_000), "oversize", "the limit is"),
        Bad("method with space", "requests", _req(method="GET /"), "schema", "field `method`"),
        Bad("negative latency", "requests", _req(latency_ms=-1), "schema", "field `latency_ms`"),
        Bad("unknown lifecycle type", "lifecycle", _life(type="apiKey.deleted"), "schema", "field `type`"),
        Bad("missing actor", "lifecycle", _life(actor=None), "schema", "field `actor` is required"),
        Bad("NaN literal", "requests", b'{"latency_ms": NaN}', "json", "not valid JSON"),
    ]
