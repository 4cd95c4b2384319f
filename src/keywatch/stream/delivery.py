"""What to do when Kafka refuses a message keywatch produces: retry it later, or give it up.

A send that can never succeed (a message too large for the producer or the topic, a record the broker calls
invalid, a topic keywatch may not write, an illegal topic) is given up at once: retrying it would stall
everything behind it forever. Everything else (timeouts, lost connections, leader changes: aiokafka's
`retriable` errors, after aiokafka's own retries within its request timeout) is retried after an exponential,
capped backoff. Pure: no I/O, so the decisions are unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiokafka import errors

from keywatch.contract.deadletter import KEY_MAX_BYTES, LETTER_MAX_BYTES
from keywatch.pipeline.wire import PACKED_MAX_BYTES

# Bounded label values of keywatch_send_failures_total{reason}.
PERMANENT_REASONS = ("too_large", "invalid_record", "authorization", "topic", "rejected")
RETRIABLE_REASONS = ("timeout", "unavailable", "other")

_TOO_LARGE: tuple[type[Exception], ...] = (
    errors.MessageSizeTooLargeError,
    errors.RecordListTooLargeError,
    errors.RecordTooLargeError,
)
# aiokafka 0.14 has no class for INVALID_RECORD (87): `errors.for_code` makes it UnknownError.
_INVALID: tuple[type[Exception], ...] = (
    errors.CorruptRecordException,
    errors.InvalidTimestampError,
    errors.UnsupportedForMessageFormatError,
    errors.InvalidRequestError,
    errors.UnknownError,
)
_AUTHORIZATION: tuple[type[Exception], ...] = (
    errors.TopicAuthorizationFailedError,
    errors.ClusterAuthorizationFailedError,
    errors.TransactionalIdAuthorizationFailed,
    errors.GroupAuthorizationFailedError,
)
_TOPIC: tuple[type[Exception], ...] = (errors.InvalidTopicError, errors.PolicyViolationError)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a failed send is worth another try, and the bounded reason label."""

    retry: bool
    reason: str


def classify(exc: BaseException) -> Verdict:
    """Classify the exception a send (or its acknowledgement) raised.

    faust wraps aiokafka's errors in ProducerSendError: its cause is what counts. Exceptions that are not Kafka's
    (a bug, an unknown partition while metadata is stale) are retried: nothing says they are permanent.
    """
    cause = exc
    while not isinstance(cause, errors.KafkaError) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, _TOO_LARGE):
        return Verdict(False, "too_large")
    if isinstance(cause, _AUTHORIZATION):
        return Verdict(False, "authorization")
    if isinstance(cause, _TOPIC):
        return Verdict(False, "topic")
    if isinstance(cause, _INVALID):
        return Verdict(False, "invalid_record")
    if isinstance(cause, errors.KafkaTimeoutError):
        return Verdict(True, "timeout")
    if isinstance(cause, errors.KafkaError):
        if cause.retriable or isinstance(cause, errors.ProducerClosed):
            return Verdict(True, "unavailable")
        return Verdict(False, "rejected")
    return Verdict(True, "other")


Action = Literal["retried", "dropped"]

# A record batch of one record adds its headers to the key and value (61 + ~20 bytes): room to spare.
BATCH_OVERHEAD_BYTES = 512
# A forward or a packed keyed message: entries (each well under 32 KiB: every field has a maximum length),
# commas, brackets and the tag byte; no key.
KEYED_MAX_BYTES = PACKED_MAX_BYTES + 32 * 1024


def required_message_bytes(keyed_topic: str, dlq_topic: str) -> dict[str, int]:
    """The `max.message.bytes` each topic with a bound on what keywatch sends it must allow (the broker checks
    a record batch, headers included). Alerts are a few KB and have no fixed bound: not listed."""
    return {
        keyed_topic: KEYED_MAX_BYTES + BATCH_OVERHEAD_BYTES,
        dlq_topic: LETTER_MAX_BYTES + KEY_MAX_BYTES + BATCH_OVERHEAD_BYTES,
    }
