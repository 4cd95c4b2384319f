"""Factories for valid input records, as dicts and as Kafka bytes."""

from __future__ import annotations

from typing import Any

import orjson


def request_dict(**overrides: Any) -> dict[str, Any]:
    """A valid request log record; override any field (None removes it)."""
    base: dict[str, Any] = {
        "ts": "2026-01-05T12:00:00.000Z",
        "tenant": "acme",
        "key_id": "key_live_1",
        "env": "live",
        "ip": "192.0.2.10",
        "method": "GET",
        "path": "/v1/customers/42",
        "status": 200,
        "latency_ms": 12.5,
        "user_agent": "acme-sdk/1.2",
        "request_id": "req-1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def lifecycle_dict(**overrides: Any) -> dict[str, Any]:
    """A valid lifecycle event (apiKey.created by default); override any field (None removes it)."""
    base: dict[str, Any] = {
        "type": "apiKey.created",
        "ts": "2026-01-05T11:00:00.000Z",
        "tenant": "acme",
        "key_id": "key_live_1",
        "name": "billing backend",
        "env": "live",
        "role": "writer",
        "actor": "alice@acme.example",
        "ip": "198.51.100.7",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def as_bytes(record: dict[str, Any]) -> bytes:
    """JSON bytes as a producer would send them."""
    return orjson.dumps(record)
