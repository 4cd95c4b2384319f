"""Decoding raw Kafka values into contract models, or into a rejection a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.redact import Redactor, may_hide_secret

M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record was not usable: a bounded `code` for metrics and a `reason` for people."""

    code: str
    reason: str


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_code(field: str, error_type: str) -> str:
    if field == "ip":
        return "ip"
    if field == "ts":
        return "timestamp"
    if field == "env":
        return "env"
    if field in ("tenant", "key_id", "replaces_key_id"):
        return "key"
    return "schema"


def describe_validation_error(exc: ValidationError) -> Rejection:
    """Turn the first pydantic error into `field `x`: <what is wrong>` (plus a count of the others)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(record)"
    field = str(first["loc"][0]) if first["loc"] else ""
    kind = first["type"]
    if kind == "missing":
        detail = "is required but missing"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        return Rejection("schema", f"field `{loc}` {detail}{more}")
    elif kind == "value_error":
        # Our own validators already name the value.
        detail = str(first["ctx"]["error"]) if "ctx" in first else first["msg"]
    else:
        detail = f"{_show(first.get('input'))}: {first['msg'][0].lower()}{first['msg'][1:]}"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return Rejection(_field_code(field, kind), f"field `{loc}`: {detail}{more}")


def decode(
    raw: bytes | None,
    model: type[M],
    *,
    max_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    now: datetime | None = None,
    max_future_skew: timedelta | None = None,
    redactor: Redactor | None = None,
) -> M | Rejection:
    """Decode one Kafka value into `model`, or say why not. Never raises for bad input.

    With a `redactor`, every string of the decoded JSON (object keys included) is redacted before validation, so
    the model and the reason of a rejection only ever hold redacted values.
    """
    if raw is None:
        return Rejection("json", "record has no value (tombstone or null)")
    if len(raw) > max_bytes:
        return Rejection("oversize", f"record is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection("encoding", f"record is not valid UTF-8 (byte {exc.start})")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("json", f"record is not valid JSON: {exc.msg} at position {exc.pos}")
    if redactor is not None and may_hide_secret(raw):
        obj, _ = redactor.redact_json(obj)
    if not isinstance(obj, dict):
        return Rejection("not_object", f"record must be a JSON object, got {type(obj).__name__}")
    try:
        # What `model_validate` does with its defaults, without its Python wrapper and the six keyword arguments
        # it hands the validator (a tenth of validating a well-formed record; decode runs for every one).
        record: M = model.__pydantic_validator__.validate_python(obj)
    except ValidationError as exc:
        return describe_validation_error(exc)
    if now is not None and max_future_skew is not None:
        ts = getattr(record, "ts", None)
        if isinstance(ts, datetime) and ts - now > max_future_skew:
            return Rejection(
                "timestamp",
                f"field `ts`: {ts.isoformat()} is more than {max_future_skew} ahead of keywatch's clock",
            )
    return record


def decode_request(raw: bytes | None, **kwargs: Any) -> RequestRecord | Rejection:
    """Decode a request log record."""
    return decode(raw, RequestRecord, **kwargs)


def decode_lifecycle(raw: bytes | None, **kwargs: Any) -> LifecycleEvent | Rejection:
    """Decode a lifecycle event."""
    return decode(raw, LifecycleEvent, **kwargs)
