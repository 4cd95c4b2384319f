"""Dead letters: records keywatch could not use, kept with a reason a person can act on.

A letter always fits in one Kafka message: past `PAYLOAD_MAX_BYTES` (value) and `KEY_MAX_BYTES` (key) only a
prefix is kept, with the full size and SHA-256 so the original can still be matched. A prefix never ends inside
a token (`cut_prefix`), so no partial secret and no partial `redacted:<hex>` is left in it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import EventTime

# Bounded set of reason codes, used as a metric label; the free-text reason says the detail.
REASON_CODES = (
    "oversize",
    "encoding",
    "json",
    "not_object",
    "schema",
    "ip",
    "timestamp",
    "env",
    "key",
    "internal",
)

# Whole up to these sizes, a prefix beyond. 256 KiB keeps every record under the default
# KEYWATCH_MAX_RECORD_BYTES (64 KiB) whole, and its base64 (~342 KiB) leaves the letter far below the producer's
# max request size.
PAYLOAD_MAX_BYTES = 256 * 1024
KEY_MAX_BYTES = 1024
REASON_MAX_BYTES = 4096
# What a letter's JSON can take at most: both base64 fields, the reason JSON-escaped (6 bytes per byte at
# worst), a topic name (249) and the fixed fields, rounded up. Checked by tests/unit/test_deadletter.py.
LETTER_MAX_BYTES = 4 * (PAYLOAD_MAX_BYTES + KEY_MAX_BYTES) // 3 + 6 * REASON_MAX_BYTES + 2048
# The max request size of keywatch's producers (faust's default, set on ingest's producer too): one record
# batch of one letter, its Kafka key and the headers (~100 bytes) must fit (a test checks it).
PRODUCER_MAX_REQUEST_BYTES = 1_000_000

# The characters of a token (what the redactor matches, and `redacted:<hex>`): a cut between two of them would
# leave part of one.
_TOKEN_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=:")


class DeadLetter(BaseModel):
    """A rejected input record (topic `keywatch.dlq`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_topic: str
    partition: int
    offset: int
    reason_code: str = Field(description=f"One of: {', '.join(REASON_CODES)}.")
    reason: str = Field(description="What is wrong, naming the field and the bad value.")
    rejected_at: EventTime = Field(description="Wall-clock time keywatch rejected it.")
    key_b64: str | None = Field(
        description="The original Kafka message key, secrets redacted, base64 (null if none); a prefix when "
        "`key_truncated`."
    )
    payload_b64: str = Field(
        description="The original message value, byte for byte but for its secrets (redacted), base64; a prefix "
        "when `payload_truncated`."
    )
    payload_size: int = Field(
        ge=0, description="Size of the whole value, secrets redacted, in bytes (the original's if it had none)."
    )
    payload_truncated: bool = Field(
        default=False,
        description=f"True when the value was larger than {PAYLOAD_MAX_BYTES} bytes: `payload_b64` holds only a "
        "prefix, cut before any token it would split (possibly empty).",
    )
    payload_sha256: str | None = Field(
        default=None,
        description="SHA-256 (hex) of the whole value, secrets redacted: for a record without secrets, the source "
        "record's, to match it against the source.",
    )
    key_size: int | None = Field(
        default=None, ge=0, description="Size of the whole original key, secrets redacted, in bytes."
    )
    key_truncated: bool = Field(
        default=False,
        description=f"True when the key was larger than {KEY_MAX_BYTES} bytes: `key_b64` holds only a prefix.",
    )


def cut_prefix(data: bytes, limit: int) -> bytes:
    """`data` if it fits in `limit` bytes, else its longest prefix of at most `limit` bytes that does not end
    inside a token (backed off to the last non-token byte; empty when the first `limit` bytes are all token)."""
    if len(data) <= limit:
        return data
    end = limit
    if end > 0 and data[end - 1] in _TOKEN_BYTES and data[end] in _TOKEN_BYTES:
        while end > 0 and data[end - 1] in _TOKEN_BYTES:
            end -= 1
    return data[:end]


def letter_key(key: bytes | None) -> bytes | None:
    """The Kafka key of a record's dead letter: the record's key, cut like `key_b64`."""
    return None if key is None else cut_prefix(key, KEY_MAX_BYTES)


def make_letter(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    reason_code: str,
    reason: str,
    rejected_at: datetime,
    key: bytes | None,
    value: bytes,
) -> DeadLetter:
    """The dead letter of one record, every variable part bounded (see the module docstring)."""
    payload = cut_prefix(value, PAYLOAD_MAX_BYTES)
    short_key = letter_key(key)
    reason_bytes = reason.encode("utf-8", "surrogatepass")
    if len(reason_bytes) > REASON_MAX_BYTES:
        reason = cut_prefix(reason_bytes, REASON_MAX_BYTES).decode("utf-8", "ignore") + "..."
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        reason_code=reason_code,
        reason=reason,
        rejected_at=rejected_at,
        key_b64=base64.b64encode(short_key).decode() if short_key is not None else None,
        payload_b64=base64.b64encode(payload).decode(),
        payload_size=len(value),
        payload_truncated=len(payload) < len(value),
        payload_sha256=hashlib.sha256(value).hexdigest(),
        key_size=len(key) if key is not None else None,
        key_truncated=key is not None and short_key is not None and len(short_key) < len(key),
    )


Source = tuple[str, int]  # an input (topic, partition)


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter ready to send: its (bounded) Kafka key and value, its reason code (counted once the broker
    has it) and the input record it stands for."""

    key: bytes | None
    value: bytes
    reason_code: str
    source: Source
    offset: int
