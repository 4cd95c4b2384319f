"""Input events: API request log records and key lifecycle events from the portal's audit log."""

from __future__ import annotations

import functools
import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

# Event times outside this range are treated as corrupt, whatever the wall clock says.
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)

Env = Literal["sandbox", "live"]
LifecycleType = Literal["apiKey.created", "apiKey.scopeChanged", "apiKey.revoked"]


def _parse_ts(value: Any) -> datetime:
    """Accept RFC 3339 strings or epoch milliseconds; return an aware UTC datetime."""
    if type(value) is str:  # the common case first: this runs once per record
        parsed = _parse_rfc3339(value)
    elif isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or epoch milliseconds, not a boolean")
    elif isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number of epoch milliseconds")
        try:
            parsed = datetime.fromtimestamp(value / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a usable epoch-milliseconds time") from exc
    elif isinstance(value, str):
        parsed = _parse_rfc3339(value)
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("datetime needs a timezone")
        parsed = value.astimezone(UTC)
    else:
        raise ValueError(f"must be an RFC 3339 string or epoch milliseconds, got {type(value).__name__}")
    if not MIN_EVENT_TIME <= parsed < MAX_EVENT_TIME:
        raise ValueError(f"{parsed.isoformat()} is outside the plausible range 2000..2100")
    return parsed


_ZERO = timedelta(0)


def _parse_lenient(value: str) -> datetime:
    """Surrounding blanks and a lowercase 'z' are tolerated; anything else is not RFC 3339."""
    text = value.strip()
    if text.endswith("z"):
        text = text[:-1] + "Z"
    try:
        if text:
            return datetime.fromisoformat(text)
    except ValueError:
        pass
    raise ValueError(f"{value!r} is not an RFC 3339 time")


def _parse_rfc3339(value: str) -> datetime:
    if len(value) > 40:
        raise ValueError(f"{value[:40]!r}... is not an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value)  # Python 3.11 reads 'Z' and offsets
    except ValueError:
        parsed = _parse_lenient(value)
    offset = parsed.utcoffset()
    if offset is None:
        raise ValueError(f"{value!r} has no UTC offset (RFC 3339 needs 'Z' or '+hh:mm')")
    return parsed.astimezone(UTC) if offset != _ZERO or parsed.tzinfo is not UTC else parsed


def format_time(value: datetime | int) -> str:
    """Every time keywatch writes (alert `time`, evidence, Alertmanager): RFC 3339 UTC with milliseconds, e.g.
    2026-01-05T09:00:00.000Z. An int is epoch milliseconds."""
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1000.0, tz=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# What the schemas say of a time: accepted as RFC 3339 with an offset or as epoch milliseconds (2000..2100);
# emitted always as RFC 3339 UTC with milliseconds.
_MIN_MS = int(MIN_EVENT_TIME.timestamp() * 1000)
_MAX_MS = int(MAX_EVENT_TIME.timestamp() * 1000)
TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
_TIME_IN: dict[str, Any] = {
    "description": "Event time: RFC 3339 with offset, or epoch milliseconds (normalised to UTC).",
    "oneOf": [
        {"type": "string", "format": "date-time", "maxLength": 40},
        {"type": "number", "minimum": _MIN_MS, "exclusiveMaximum": _MAX_MS},
    ],
}
_TIME_OUT: dict[str, Any] = {
    "description": "RFC 3339 UTC with milliseconds.",
    "type": "string",
    "format": "date-time",
    "pattern": TIME_PATTERN,
}

EventTime = Annotated[
    datetime,
    BeforeValidator(_parse_ts),
    PlainSerializer(format_time, return_type=str, when_used="json"),
    WithJsonSchema(_TIME_IN, mode="validation"),
    WithJsonSchema(_TIME_OUT, mode="serialization"),
]


# A busy key's few addresses repeat: each is parsed once while it is among the most recent 8,192 (a miss costs a
# parse, ~2 µs; the cache's entries are resident memory for as long as the worker runs, ~250 B each).
@functools.lru_cache(maxsize=8192)
def _check_ip(value: str) -> str:
    shown = value if len(value) <= 64 else value[:64] + "..."
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{shown!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:  # a zone (fe80::1%eth0) names the gateway's interface, not a client
            raise ValueError(f"{shown!r} is not a client IP address (it has an IPv6 zone)")
        if address.ipv4_mapped is not None:  # a dual-stack socket's view of an IPv4 client
            return str(address.ipv4_mapped)
    normal = str(address)
    return value if normal == value else normal  # (the record's own string where it is already normal)


IpAddress = Annotated[
    str,
    Field(max_length=64, description="IPv4 or IPv6 address of the client (normalised)."),
    AfterValidator(_check_ip),
]

# Identifiers end up in Kafka keys and alert subjects ('<tenant>/<key_id>'): no '/' or whitespace.
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="ignore",  # producers may add fields; we keep only what we know (and never store unknown text)
        frozen=True,
        str_strip_whitespace=False,
    )


class RequestRecord(_Strict):
    """One API request as logged by the gateway (topic `api.requests`)."""

    ts: EventTime
    tenant: Identifier = Field(description="The tenant, from the x-tn header.")
    key_id: Identifier = Field(description="The key's public identifier; never the secret.")
    env: Env
    ip: IpAddress
    method: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z]+$")
    path: str = Field(min_length=1, max_length=2048)
    status: int = Field(ge=100, le=599, strict=True)
    latency_ms: float | None = Field(default=None, ge=0, le=86_400_000)
    user_agent: str | None = Field(default=None, max_length=512)
    request_id: str | None = Field(default=None, max_length=128)
    # Browser provenance headers, as the gateway logged them (absent: the client did not send them).
    origin: str | None = Field(default=None, max_length=512, description="The Origin request header.")
    referer: str | None = Field(default=None, max_length=512, description="The Referer request header.")
    sec_fetch_site: str | None = Field(default=None, max_length=64, description="The Sec-Fetch-Site header.")
    sec_fetch_mode: str | None = Field(default=None, max_length=64, description="The Sec-Fetch-Mode header.")

    @property
    def subject(self) -> str:
        """`<tenant>/<key_id>`, the partitioning key and alert subject."""
        return f"{self.tenant}/{self.key_id}"


class LifecycleEvent(_Strict):
    """A key lifecycle event from the portal's audit log (topic `apikey.lifecycle`)."""

    type: LifecycleType
    ts: EventTime
    tenant: Identifier
    key_id: Identifier
    name: str = Field(min_length=1, max_length=200)
    env: Env
    role: str = Field(min_length=1, max_length=64)
    actor: str = Field(min_length=1, max_length=200, description="Who did it in the portal.")
    replaces_key_id: Identifier | None = Field(
        default=None, description="On the new key of a rotation: the key it replaces."
    )
    ip: IpAddress | None = Field(default=None, description="The actor's IP address.")
    channel: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Where the operation was made: `portal`, `api` or another channel (absent in older records).",
    )
    mfa: bool | None = Field(
        default=None,
        strict=True,
        description="Whether the actor's session was MFA-verified (a JSON boolean; absent in older records).",
    )

    @property
    def subject(self) -> str:
        """`<tenant>/<key_id>`, the partitioning key and alert subject."""
        return f"{self.tenant}/{self.key_id}"
