"""Send failures: which are retried and which are given up, the backoff, and which input partitions a batch
with unacknowledged messages commits and which it reads again (the pure parts of the ingest stage)."""

from __future__ import annotations

import pytest
from aiokafka import errors
from faust.exceptions import ProducerSendError
from hypothesis import given, settings
from hypothesis import strategies as st

from keywatch.backoff import Backoff
from keywatch.contract.deadletter import KEY_MAX_BYTES, LETTER_MAX_BYTES, PRODUCER_MAX_REQUEST_BYTES, Letter
from keywatch.pipeline.ingest import IngestBatch
from keywatch.pipeline.wire import PACKED_MAX_BYTES
from keywatch.stream.delivery import (
    PERMANENT_REASONS,
    RETRIABLE_REASONS,
    classify,
    required_message_bytes,
)
from keywatch.stream.ingest import outgoing, plan_offsets


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (errors.MessageSizeTooLargeError(), "too_large"),
        (errors.RecordListTooLargeError(), "too_large"),
        (errors.RecordTooLargeError(), "too_large"),
        (errors.CorruptRecordException(), "invalid_record"),
        (errors.InvalidTimestampError(), "invalid_record"),
        (errors.for_code(87)(), "invalid_record"),  # INVALID_RECORD has no class of its own in aiokafka 0.14
        (errors.TopicAuthorizationFailedError("t"), "authorization"),
        (errors.ClusterAuthorizationFailedError(), "authorization"),
        (errors.InvalidTopicError(), "topic"),
        (errors.PolicyViolationError(), "topic"),
        (errors.InvalidRequiredAcksError(), "rejected"),
    ],
)
def test_sends_that_can_never_succeed_are_not_retried(exc: Exception, reason: str) -> None:
    """Too large, invalid, unauthorised or illegal-topic sends are given up, with a bounded reason."""
    verdict = classify(exc)
    assert (verdict.retry, verdict.reason) == (False, reason)
    assert verdict.reason in PERMANENT_REASONS


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (errors.KafkaTimeoutError(), "timeout"),
        (errors.KafkaConnectionError(), "unavailable"),
        (errors.NotLeaderForPartitionError(), "unavailable"),
        (errors.LeaderNotAvailableError(), "unavailable"),
        (errors.NotEnoughReplicasError(), "unavailable"),
        (errors.UnknownTopicOrPartitionError(), "unavailable"),
        (errors.RequestTimedOutError(), "unavailable"),
        (errors.ProducerClosed(), "unavailable"),
        (AssertionError("Unrecognized partition"), "other"),
    ],
)
def test_transient_failures_are_retried(exc: Exception, reason: str) -> None:
    """Timeouts, lost connections, leader changes and unknown failures are retried."""
    verdict = classify(exc)
    assert (verdict.retry, verdict.reason) == (True, reason)
    assert verdict.reason in RETRIABLE_REASONS


def test_faust_wrapped_errors_are_classified_by_their_cause() -> None:
    """faust's ProducerSendError is judged by the aiokafka error it wraps."""
    wrapped = ProducerSendError("Error while sending: MessageSizeTooLargeError(...)")
    wrapped.__cause__ = errors.MessageSizeTooLargeError("The message is 1400000 bytes")
    assert (classify(wrapped).retry, classify(wrapped).reason) == (False, "too_large")


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    """The retry delays grow exponentially, stop at the cap and start over after a success."""
    backoff = Backoff(initial=0.5, cap=4.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_only_the_partitions_of_unacknowledged_messages_are_read_again() -> None:
    """A batch commits every input partition's end except those an unacknowledged message carries: they commit
    and are read again from the first record such a message carries."""
    ends = {("req", 0): 100, ("req", 1): 50, ("life", 0): 10}
    commit, rewind = plan_offsets(ends, [{("req", 1): 30}, {("req", 1): 20, ("life", 0): 7}])
    assert rewind == {("req", 1): 20, ("life", 0): 7}
    assert commit == {("req", 0): 100, ("req", 1): 20, ("life", 0): 7}
    assert plan_offsets(ends, []) == (ends, {})


@settings(max_examples=200, deadline=None)
@given(
    sends=st.lists(
        st.tuples(
            st.dictionaries(st.integers(0, 3), st.integers(0, 99), min_size=1, max_size=4),  # what a message carries
            st.booleans(),  # acknowledged
        ),
        max_size=12,
    )
)
def test_nothing_unacknowledged_is_committed_and_nothing_acknowledged_is_rewound(
    sends: list[tuple[dict[int, int], bool]],
) -> None:
    """For any messages (each carrying records of some input partitions from some offset), no input partition
    commits past a record an unacknowledged message carries, and a partition whose messages all arrived commits
    its end and is not read again."""
    ends = {("t", p): 100 for p in range(4)}
    carried = [({("t", p): o for p, o in carries.items()}, acked) for carries, acked in sends]
    commit, rewind = plan_offsets(ends, (c for c, acked in carried if not acked))
    for carries, acked in carried:
        for source, offset in carries.items():
            if not acked:
                assert commit[source] <= offset
                assert rewind[source] <= offset
    for source, end in ends.items():
        if all(acked or source not in carries for carries, acked in carried):
            assert commit[source] == end
            assert source not in rewind


def test_outgoing_lists_keyed_messages_with_their_partitions_and_letters_with_their_record() -> None:
    """Every keyed message goes to its partition and says what it carries; a letter carries its one record and
    its reason code (counted once acknowledged)."""
    out = IngestBatch(
        keyed={2: [b"P[1]", b"P[2]"]},
        keyed_from={2: [{("req", 0): 5}, {("req", 0): 9, ("req", 1): 3}]},
        dead_letters=[Letter(b"k", b"{}", "json", ("req", 1), 4)],
    )
    messages = outgoing(out, "keyed", "dlq")
    assert [(m.channel, m.topic, m.partition, m.carries, m.reason_code) for m in messages] == [
        ("keyed", "keyed", 2, {("req", 0): 5}, None),
        ("keyed", "keyed", 2, {("req", 0): 9, ("req", 1): 3}, None),
        ("dlq", "dlq", None, {("req", 1): 4}, "json"),
    ]
    assert messages[2].key == b"k"


def test_what_keywatch_needs_of_its_topics_fits_kafkas_defaults() -> None:
    """The DLQ and keyed topics need less than Kafka's default max.message.bytes (1,048,588) and no more than the
    producers' max request size, and at least the largest letter and packed message."""
    needs = required_message_bytes("keyed", "dlq")
    assert needs["dlq"] >= LETTER_MAX_BYTES + KEY_MAX_BYTES
    assert needs["keyed"] >= PACKED_MAX_BYTES
    assert max(needs.values()) <= min(1_048_588, PRODUCER_MAX_REQUEST_BYTES)
