"""Dead letters: records keywatch could not use, kept intact with a reason a person can act on."""

from __future__ import annotations

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


class DeadLetter(BaseModel):
    """A rejected input record (topic `keywatch.dlq`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_topic: str
    partition: int
    offset: int
    reason_code: str = Field(description=f"One of: {', '.join(REASON_CODES)}.")
    reason: str = Field(description="What is wrong, naming the field and the bad value.")
    rejected_at: EventTime = Field(description="Wall-clock time keywatch rejected it.")
    key_b64: str | None = Field(description="The original Kafka message key, base64 (null if none).")
    payload_b64: str = Field(description="The original message value, byte for byte, base64.")
    payload_size: int = Field(ge=0)
