"""The reusable parts of a network sink (sinks/queueing.py): Retry-After, backoff, dedupe, the bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keywatch.sinks.queueing import (
    Answer,
    Dedupe,
    DeliveryError,
    DeliveryQueue,
    Refused,
    Retrying,
    retry_after,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_retry_after_reads_seconds_and_http_dates_and_caps_them() -> None:
    """Retry-After as delay-seconds or an HTTP-date gives that delay, capped; a date past or garbage gives 0/None."""
    assert retry_after("7", cap_s=30, now=NOW) == 7.0
    assert retry_after("120", cap_s=30, now=NOW) == 30.0
    assert retry_after(format_datetime(NOW + timedelta(seconds=12), usegmt=True), cap_s=30, now=NOW) == 12.0
    assert retry_after(format_datetime(NOW + timedelta(hours=1), usegmt=True), cap_s=30, now=NOW) == 30.0
    assert retry_after(format_datetime(NOW - timedelta(seconds=5), usegmt=True), cap_s=30, now=NOW) == 0.0
    assert retry_after("soon", cap_s=30, now=NOW) is None
    assert retry_after(None, cap_s=30, now=NOW) is None


class Script:
    """An attempt that answers as scripted, and the delays the retry loop waited."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.waited: list[float] = []

    async def attempt(self) -> Answer:
        self.calls += 1
        return self.answers.pop(0)

    async def sleep(self, seconds: float) -> None:
        self.waited.append(seconds)


async def test_retrying_waits_what_retry_after_asks_then_the_backoff() -> None:
    """A Retry-After answer is waited as asked (capped); without one the exponential backoff applies."""
    script = Script([Answer(False, retry_after_s=3.0), Answer(False), Answer(False, retry_after_s=99.0), Answer(True)])
    retrying = Retrying(max_attempts=5, backoff_initial_s=0.5, backoff_max_s=10.0, sleep=script.sleep)
    await retrying.run(script.attempt, "post")
    assert script.waited == [3.0, 1.0, 10.0]  # backoff goes 0.5 (skipped for Retry-After), 1.0, then the cap
    assert script.calls == 4


async def test_backoff_doubles_up_to_its_cap_and_gives_up_after_the_last_attempt() -> None:
    """Failures without Retry-After wait 0.5, 1, 2, 2 (capped), then DeliveryError after the 5th attempt."""
    script = Script([Answer(False, detail="HTTP 503")] * 5)
    retrying = Retrying(max_attempts=5, backoff_initial_s=0.5, backoff_max_s=2.0, sleep=script.sleep)
    with pytest.raises(DeliveryError, match="gave up after 5 attempts: HTTP 503"):
        await retrying.run(script.attempt, "post")
    assert script.waited == [0.5, 1.0, 2.0, 2.0]


async def test_a_refusal_is_not_retried() -> None:
    """An answer that must not be retried raises Refused at once."""
    script = Script([Answer(False, retry=False, detail="HTTP 400"), Answer(True)])
    with pytest.raises(Refused, match="HTTP 400"):
        await Retrying(sleep=script.sleep).run(script.attempt, "post")
    assert (script.calls, script.waited) == (1, [])


def test_dedupe_forgets_the_least_recently_seen_id_first() -> None:
    """A full Dedupe forgets its oldest id; looking an id up makes it recent again."""
    dedupe = Dedupe(2)
    dedupe.add("a")
    dedupe.add("b")
    assert "a" in dedupe  # a is recent now
    dedupe.add("c")
    assert ("a" in dedupe, "b" in dedupe, "c" in dedupe) == (True, False, True)
    assert len(dedupe) == 2


class Receiver:
    """Records every batch delivered; fails (retriably, or for good) as told."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail_next: list[Exception] = []

    async def deliver(self, batch: Sequence[str]) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.batches.append(list(batch))

    @property
    def ids(self) -> list[str]:
        return [item for batch in self.batches for item in batch]


def _queue(receiver: Receiver, **kwargs: object) -> tuple[DeliveryQueue[str], list[tuple[int, str]]]:
    drops: list[tuple[int, str]] = []
    queue: DeliveryQueue[str] = DeliveryQueue(
        receiver.deliver,
        item_id=lambda item: item,
        on_drop=lambda n, reason: drops.append((n, reason)),
        retry_initial_s=0.01,
        retry_max_s=0.01,
        **kwargs,  # type: ignore[arg-type]
    )
    return queue, drops


@given(st.lists(st.sampled_from([f"id{i}" for i in range(12)]), max_size=60), st.integers(1, 5))
async def test_dedupe_never_delivers_an_id_twice(ids: list[str], batch_size: int) -> None:
    """For any stream of ids with repeats, each distinct id is delivered exactly once, in first-seen order."""
    receiver = Receiver()
    queue, drops = _queue(receiver, batch_size=batch_size, dedupe_size=64)
    for i, item in enumerate(ids):
        queue.put(item)
        if i % 7 == 6:
            await queue.flush()
    await queue.flush()
    expected = list(dict.fromkeys(ids))  # the reference: first occurrences, in order
    assert receiver.ids == expected
    assert all(len(batch) <= batch_size for batch in receiver.batches)
    assert (queue.delivered, queue.duplicates, drops) == (len(expected), len(ids) - len(expected), [])


async def test_a_full_queue_drops_its_oldest_item_with_the_drop_hook() -> None:
    """Past max_queue the oldest item is dropped and reported as an overflow; the rest is delivered."""
    receiver = Receiver()
    queue, drops = _queue(receiver, max_queue=3, batch_size=10)
    for item in "abcde":
        queue.put(item)
    await queue.flush()
    assert receiver.ids == ["c", "d", "e"]
    assert drops == [(1, "overflow"), (1, "overflow")]
    assert queue.dropped == 2


async def test_the_worker_keeps_an_undelivered_batch_and_delivers_it_later() -> None:
    """A batch the receiver cannot take goes back to the queue; the worker delivers it once the receiver is back."""
    receiver = Receiver()
    receiver.fail_next = [DeliveryError("down"), DeliveryError("down")]
    queue, drops = _queue(receiver, batch_size=2, interval_s=0.01)
    await queue.start()
    try:
        for item in "abc":
            queue.put(item)
        assert await queue.flush(timeout_s=10)
    finally:
        await queue.stop(timeout_s=1)
    assert receiver.ids == ["a", "b", "c"]
    assert (queue.pending, drops) == (0, [])


async def test_a_refused_batch_is_dropped_and_the_next_one_delivered() -> None:
    """A batch refused for good is dropped (reported as refused); the queue goes on with the next one."""
    receiver = Receiver()
    receiver.fail_next = [Refused("HTTP 400")]
    queue, drops = _queue(receiver, batch_size=2)
    for item in "abc":
        queue.put(item)
    await queue.flush()
    assert receiver.ids == ["c"]
    assert drops == [(2, "refused")]
    queue.put("a")  # refused ids are not remembered as delivered
    await queue.flush()
    assert receiver.ids == ["c", "a"]


async def test_flush_gives_up_at_its_deadline_and_keeps_the_items() -> None:
    """With the receiver down, flush returns False at its timeout and the items are still queued."""
    receiver = Receiver()
    receiver.fail_next = [DeliveryError("down")] * 1000
    queue, _ = _queue(receiver, interval_s=0.01)
    await queue.start()
    try:
        queue.put("a")
        assert await queue.flush(timeout_s=0.2) is False
        assert queue.pending == 1
    finally:
        await queue.stop(timeout_s=0.01)
    assert receiver.ids == []


async def test_a_started_worker_delivers_without_a_flush() -> None:
    """The worker delivers on its own, every interval: put alone is enough."""
    receiver = Receiver()
    queue, _ = _queue(receiver, interval_s=0.01)
    await queue.start()
    try:
        queue.put("a")
        deadline = asyncio.get_running_loop().time() + 10
        while not receiver.ids:
            assert asyncio.get_running_loop().time() < deadline, "not delivered within 10s"
            await asyncio.sleep(0.01)
    finally:
        await queue.stop(timeout_s=1)
    assert receiver.ids == ["a"]
