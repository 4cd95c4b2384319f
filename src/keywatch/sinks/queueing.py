"""The reusable parts of a sink that delivers over a network: a bounded queue with a worker task, dedupe by id,
retry with a capped exponential backoff that honours `Retry-After`, an HTTP poster, and `HttpSink`, the optional
sink made of them.

The Alertmanager sink is an `HttpSink` plus its mapping of alerts to Alertmanager's JSON; a webhook sink is the
same with another mapping. None of them holds up the pipeline: `DeliveryQueue.put` only queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Generic, TypedDict, TypeVar

import aiohttp

from keywatch.backoff import Backoff
from keywatch.sinks.base import OutputSink

log = logging.getLogger(__name__)

T = TypeVar("T")


class DeliveryError(Exception):
    """The receiver stayed unreachable (or answered 5xx, 408, 429) through every attempt: worth trying later."""


class Refused(DeliveryError):
    """The receiver refused the batch (4xx other than 408 and 429): retrying would not help."""


class Dedupe:
    """The last `size` ids delivered: bounded memory, the oldest forgotten first (an LRU)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, item_id: object) -> bool:
        if item_id in self._ids:
            self._ids.move_to_end(item_id)  # type: ignore[arg-type]
            return True
        return False

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item_id: str) -> None:
        """Remember an id (the oldest one goes when the memory is full)."""
        self._ids[item_id] = None
        self._ids.move_to_end(item_id)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)


def retry_after(value: str | None, *, cap_s: float, now: datetime | None = None) -> float | None:
    """The delay an HTTP `Retry-After` header asks for (delay-seconds or an HTTP-date), at most `cap_s`; None
    when there is no (valid) header."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap_s)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), cap_s)


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one delivery attempt: delivered, worth another try (after `retry_after_s` if the receiver
    said so), or refused for good; `detail` says why, for the log."""

    ok: bool
    retry: bool = True
    retry_after_s: float | None = None
    detail: str = ""


@dataclass
class Retrying:
    """Runs an attempt until it succeeds, up to `max_attempts` times, waiting between attempts the receiver's
    `Retry-After` when it sent one (capped by the backoff's cap), else the next exponential backoff delay."""

    max_attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 15.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    async def run(self, attempt: Callable[[], Awaitable[Answer]], what: str) -> None:
        """Raise Refused when an attempt is refused, DeliveryError after the last failed attempt."""
        backoff = Backoff(self.backoff_initial_s, self.backoff_max_s)
        answer = Answer(ok=False)
        for number in range(1, self.max_attempts + 1):
            answer = await attempt()
            if answer.ok:
                return
            if not answer.retry:
                raise Refused(f"{what} refused: {answer.detail}")
            if number < self.max_attempts:
                delay = backoff.next()
                if answer.retry_after_s is not None:
                    delay = min(answer.retry_after_s, self.backoff_max_s)
                log.info("%s failed (%s), retry %d in %.2fs", what, answer.detail, number, delay)
                await self.sleep(delay)
        raise DeliveryError(f"{what}: gave up after {self.max_attempts} attempts: {answer.detail}")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One POST: where, what, with which headers."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


class HttpPoster:
    """POSTs requests with `Retrying`: 2xx is delivered; 408, 429, 5xx and connection errors are retried
    (`Retry-After` honoured); any other 4xx is refused."""

    def __init__(
        self,
        retrying: Retrying | None = None,
        *,
        timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.retrying = retrying or Retrying()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._own_session = session is None

    async def post(self, request: HttpRequest) -> None:
        """Deliver the request or raise (`Refused`, `DeliveryError`)."""
        await self.retrying.run(lambda: self._attempt(request), f"POST {request.url}")

    async def _attempt(self, request: HttpRequest) -> Answer:
        try:
            async with self._client().post(
                request.url, data=request.body, headers=dict(request.headers), timeout=self._timeout
            ) as response:
                if response.status < 300:
                    return Answer(ok=True)
                text = (await response.text())[:500]
                detail = f"HTTP {response.status}: {text}"
                if 400 <= response.status < 500 and response.status not in (408, 429):
                    return Answer(ok=False, retry=False, detail=detail)
                wait = retry_after(response.headers.get("Retry-After"), cap_s=self.retrying.backoff_max_s)
                return Answer(ok=False, retry_after_s=wait, detail=detail)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Answer(ok=False, detail=f"{type(exc).__name__}: {exc}")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def close(self) -> None:
        """Close the HTTP session if this poster opened it."""
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()


class DeliveryQueue(Generic[T]):
    """A bounded queue of items and a worker task that delivers them in batches through `deliver`.

    `put` never waits: a full queue drops its oldest item (`on_drop(n, "overflow")`). An id already delivered
    (within the `Dedupe` memory) or still queued is not queued again. The worker wakes when a batch is full or
    every `interval_s`; a batch `deliver` refuses is dropped (`on_drop(n, "refused")`), one it cannot deliver
    goes back to the head of the queue and is tried again after a backoff (capped at `retry_max_s`).
    """

    def __init__(
        self,
        deliver: Callable[[Sequence[T]], Awaitable[None]],
        *,
        item_id: Callable[[T], str],
        name: str = "sink",
        batch_size: int = 64,
        max_queue: int = 10_000,
        dedupe_size: int = 65_536,
        interval_s: float = 1.0,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        on_drop: Callable[[int, str], None] | None = None,
        on_delivered: Callable[[int], None] | None = None,
    ) -> None:
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be at least 1")
        self.name = name
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.delivered = 0  # items the receiver accepted
        self.duplicates = 0  # items not queued: their id was already delivered or queued
        self.dropped = 0  # items lost: queue overflow or refused
        self._deliver = deliver
        self._item_id = item_id
        self._queue: deque[T] = deque(maxlen=max_queue)
        self._queued: set[str] = set()  # ids queued or in flight
        self._dedupe = Dedupe(dedupe_size)
        self._backoff = Backoff(retry_initial_s, retry_max_s)
        self._on_drop = on_drop
        self._on_delivered = on_delivered
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Items queued or in flight."""
        return len(self._queued)

    def put(self, item: T) -> bool:
        """Queue one item; False when its id was already delivered or is queued."""
        item_id = self._item_id(item)
        if item_id in self._queued or item_id in self._dedupe:
            self.duplicates += 1
            return False
        if len(self._queue) == self._queue.maxlen:
            lost = self._queue.popleft()
            self._queued.discard(self._item_id(lost))
            self._dropped(1, "overflow")
            log.warning("%s queue full: dropped %s (it is still on the alert topic)", self.name, self._item_id(lost))
        self._queue.append(item)
        self._queued.add(item_id)
        self._idle.clear()
        if len(self._queue) >= self.batch_size:
            self._wake.set()
        return True

    async def start(self) -> None:
        """Start the worker task (once)."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name=f"{self.name}-delivery")

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Deliver what is queued now: True once the queue is empty, False when `timeout_s` passed first (the
        items stay queued). Without a running worker the queue is drained here, one pass."""
        if self._worker is None or self._worker.done():
            await self._drain()
            return not self._queued
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush (for at most `timeout_s`), then stop the worker; what is still queued is logged as lost."""
        await self.flush(timeout_s)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._queued:
            log.warning("%s stopped with %d item(s) not delivered", self.name, len(self._queued))

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: wait_for can swallow the cancellation `stop` sends (Python 3.11).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            if not await self._drain():
                await asyncio.sleep(self._backoff.next())  # the receiver is down: wait, then try again
                self._wake.set()

    async def _drain(self) -> bool:
        """Deliver every queued batch; False when the receiver could not take one (it is queued again)."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            try:
                await self._deliver(batch)
            except Refused as exc:
                self._forget(batch)
                self._dropped(len(batch), "refused")
                log.error("%s refused %d item(s), dropped: %s", self.name, len(batch), exc)
                continue
            except DeliveryError as exc:
                room = (self._queue.maxlen or len(batch)) - len(self._queue)  # items put meanwhile take room
                if len(batch) > room:
                    lost, batch = batch[: len(batch) - room], batch[len(batch) - room :]
                    self._forget(lost)
                    self._dropped(len(lost), "overflow")
                self._queue.extendleft(reversed(batch))
                log.warning("%s unreachable, %d item(s) kept: %s", self.name, len(self._queued), exc)
                return False
            except Exception:  # a bug in a sink must not kill its worker: the batch is lost, loudly
                self._forget(batch)
                self._dropped(len(batch), "error")
                log.exception("%s failed on %d item(s): dropped", self.name, len(batch))
                continue
            self._forget(batch)
            for item in batch:
                self._dedupe.add(self._item_id(item))
            self.delivered += len(batch)
            self._backoff.reset()
            if self._on_delivered is not None:
                self._on_delivered(len(batch))
        if not self._queued:
            self._idle.set()
        return True

    def _forget(self, batch: Sequence[T]) -> None:
        for item in batch:
            self._queued.discard(self._item_id(item))

    def _dropped(self, n: int, reason: str) -> None:
        self.dropped += n
        if self._on_drop is not None:
            self._on_drop(n, reason)


class HttpOptions(TypedDict, total=False):
    """The tuning of an `HttpSink` (see its parameters), for sinks built on it."""

    batch_size: int
    max_queue: int
    dedupe_size: int
    interval_s: float
    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    timeout_s: float
    stop_timeout_s: float
    session: aiohttp.ClientSession | None


class HttpSink(OutputSink[T]):
    """An optional sink that POSTs batches of items: a `DeliveryQueue` (bounded, deduped by `item_id`) whose
    batches an `HttpPoster` sends; a subclass (or caller) gives the request of a batch (`build_request`).
    `delivered`, `duplicates` and `dropped` count what happened; `on_drop` and `on_delivered` export it."""

    required = False

    def __init__(
        self,
        build_request: Callable[[Sequence[T]], HttpRequest],
        *,
        item_id: Callable[[T], str],
        name: str = "http",
        batch_size: int = 64,
        max_queue: int = 10_000,
        dedupe_size: int = 65_536,
        interval_s: float = 1.0,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 15.0,
        timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        on_drop: Callable[[int, str], None] | None = None,
        on_delivered: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.stop_timeout_s = stop_timeout_s
        self._build_request = build_request
        self._poster = HttpPoster(
            Retrying(max_attempts, backoff_initial_s, backoff_max_s), timeout_s=timeout_s, session=session
        )
        self.queue: DeliveryQueue[T] = DeliveryQueue(
            self._post,
            item_id=item_id,
            name=name,
            batch_size=batch_size,
            max_queue=max_queue,
            dedupe_size=dedupe_size,
            interval_s=interval_s,
            retry_initial_s=backoff_initial_s,
            retry_max_s=backoff_max_s,
            on_drop=on_drop,
            on_delivered=on_delivered,
        )

    @property
    def delivered(self) -> int:
        """Items the receiver accepted."""
        return self.queue.delivered

    @property
    def duplicates(self) -> int:
        """Items not queued: their id was already delivered or queued."""
        return self.queue.duplicates

    @property
    def dropped(self) -> int:
        """Items lost: queue overflow or refused by the receiver."""
        return self.queue.dropped

    @property
    def pending(self) -> int:
        """Items queued (or being posted) and not accepted yet."""
        return self.queue.pending

    async def start(self) -> None:
        """Start the queue's worker."""
        await self.queue.start()

    async def write(self, items: Sequence[T]) -> None:
        """Queue the items (never waits on the receiver)."""
        for item in items:
            self.queue.put(item)

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued item is delivered (or dropped), at most `timeout_s`."""
        await self.queue.flush(timeout_s)

    async def stop(self) -> None:
        """Post what is queued (for at most `stop_timeout_s`), stop the worker, close the HTTP session."""
        try:
            await self.queue.stop(self.stop_timeout_s)
        finally:
            await self._poster.close()

    async def _post(self, batch: Sequence[T]) -> None:
        await self._poster.post(self._build_request(batch))
