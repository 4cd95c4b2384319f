"""The ingest stage: the input topics read in batches with a plain aiokafka consumer, beside faust.

faust's cost is per message (~175 µs consumed, ~430 µs per send on this kind of machine), so ingest does not go
through it: a batch from `getmany` is validated and redacted record by record (`Processor.pack_batch`, the same
`route` as `Processor.ingest`), and becomes one packed message per keyed-topic partition (explicit partition:
Kafka's default murmur2 partitioner over `<tenant>/<key_id>`, as faust's producer uses for forwards) plus one
dead letter per bad record, written to the dead-letter sink (`letters`, by default a `ProducerLetterSink` on
ingest's producer: the same seam as detect's dead letters).

At-least-once: the sends of a batch are awaited (acknowledged by the broker, acks=all) BEFORE the batch's offsets
are committed. A send that fails is classified (`stream/delivery.py`): one that can never succeed is dropped,
logged and counted (keywatch_send_failures_total); one worth retrying leaves its input partitions uncommitted
from the first record it carried, and only those are read again, after an exponential backoff. The other input
partitions of the batch commit: one partition's trouble never rewinds the others. The consumer group is
`<app_id>-ingest` (faust's group `<app_id>` keeps the keyed topic); on a rebalance, revocation waits until the
batch in flight is sent and committed, so a partition moves with nothing in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import re
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from keywatch.backoff import Backoff
from keywatch.config import Settings
from keywatch.contract.deadletter import PRODUCER_MAX_REQUEST_BYTES, Letter, Source
from keywatch.metrics import Metrics
from keywatch.pipeline.ingest import IngestBatch
from keywatch.pipeline.partitioner import partition_of
from keywatch.pipeline.processor import Processor
from keywatch.security import aiokafka_kwargs
from keywatch.sinks.base import OutputSink, Undelivered
from keywatch.stream.delivery import classify
from keywatch.stream.kafka_sinks import ProducerLetterSink
from keywatch.stream.lag import GroupOffsets, Offsets, measure

log = logging.getLogger(__name__)

BATCH_RECORDS = 8000  # most input records per batch (getmany max_records): ~1,000 per packed message at 4 partitions
POLL_MS = 100  # how long getmany waits for records when the input is idle


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message of a batch for the keyed topic or the DLQ, and the input records it carries."""

    channel: Literal["keyed", "dlq"]
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    carries: dict[Source, int]  # input partition -> the smallest offset of it in this message
    reason_code: str | None = None  # a dead letter's: counted once the broker has it


def outgoing(out: IngestBatch, keyed_topic: str, dlq_topic: str) -> list[Outgoing]:
    """Every message a packed batch sends: the keyed messages (explicit partition), then the dead letters."""
    messages = [
        Outgoing("keyed", keyed_topic, None, value, partition, carries)
        for partition, values in out.keyed.items()
        for value, carries in zip(values, out.keyed_from[partition], strict=True)
    ]
    messages.extend(
        Outgoing("dlq", dlq_topic, letter.key, letter.value, None, {letter.source: letter.offset}, letter.reason_code)
        for letter in out.dead_letters
    )
    return messages


def plan_offsets(
    ends: dict[Source, int], unacknowledged: Iterable[dict[Source, int]]
) -> tuple[dict[Source, int], dict[Source, int]]:
    """Where each input partition of a batch commits, and which ones are read again from where.

    `ends`: the offset after the batch's last record of each input partition; `unacknowledged`: what the
    messages that must be sent again carry. A partition is rewound to the first record such a message carries
    (its records before that one are acknowledged: they commit); every other partition commits its end.
    """
    rewind: dict[Source, int] = {}
    for carries in unacknowledged:
        for source, offset in carries.items():
            if source in ends:
                rewind[source] = min(offset, rewind.get(source, offset))
    commit = {source: rewind.get(source, end) for source, end in ends.items()}
    return commit, rewind


class _Revoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, stage: IngestStage) -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        self._stage.rebalancing = True
        # The batch in flight (if any) holds the lock until its sends are acknowledged and its offsets committed.
        async with self._stage.lock:
            pass

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self._stage.rebalancing = False
        log.info("ingest assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)))


class IngestStage:
    """Consumes the input topics in batches and produces packed keyed messages and dead letters."""

    def __init__(
        self,
        settings: Settings,
        processor: Processor,
        metrics: Metrics,
        keyed_topic: str,
        letters: OutputSink[Letter] | None = None,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        self.keyed_topic = keyed_topic
        self.group = f"{settings.app_id}-ingest"
        self.lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self.rebalancing = True  # until the first assignment: offsets measured meanwhile mean nothing
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._partitions = 0
        self._seconds = metrics.processing.labels("ingest")
        self._records = metrics.processed_records.labels("ingest")
        self._backoff = Backoff()
        # The dead-letter sink; the default one sends through ingest's producer, started and stopped by `run`.
        self.letters: OutputSink[Letter] = letters or ProducerLetterSink(self.producer, settings.topic_dlq, metrics)

    def producer(self) -> AIOKafkaProducer:
        """Ingest's producer (started by `run`)."""
        assert self._producer is not None, "ingest's producer is started by run()"
        return self._producer

    def partition_of(self, subject: bytes) -> int:
        """The keyed-topic partition of a subject: Kafka's default partitioner (murmur2, positive, modulo)."""
        return partition_of(subject, self._partitions)

    def keyed_partition(self, subject: bytes) -> int | None:
        """`partition_of`, or None before ingest has read the keyed topic's partition count."""
        return partition_of(subject, self._partitions) if self._partitions else None

    async def run(self) -> None:
        """Start the clients, then consume until `stop()`; the clients are stopped on the way out."""
        self._running = True
        security = aiokafka_kwargs(self.settings)
        session_ms = int(self.settings.session_timeout_seconds * 1000)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_list,
            client_id=f"{self.group}-producer",
            acks="all",
            max_request_size=PRODUCER_MAX_REQUEST_BYTES,
            **security,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_list,
            client_id=f"{self.group}-consumer",
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=min(3000, session_ms // 3),
            **security,
        )
        try:
            await self._producer.start()
            partitions = await self._producer.partitions_for(self.keyed_topic)
            self._partitions = len(partitions)
            if self._partitions != self.settings.partitions:
                log.warning(
                    "%s has %d partitions, KEYWATCH_PARTITIONS says %d: packing by the topic",
                    self.keyed_topic,
                    self._partitions,
                    self.settings.partitions,
                )
            await self.resume_from_faust()
            await self._consumer.start()
            # A pattern, not topic names: aiokafka then asks for the metadata of all topics, which never creates one,
            # while a request naming a topic creates it where auto.create.topics.enable is on (a deleted or
            # misspelled input topic must stay missing, not become an empty topic keywatch silently waits on).
            inputs = (self.settings.topic_requests, self.settings.topic_lifecycle)
            self._consumer.subscribe(
                pattern="^(" + "|".join(re.escape(t) for t in inputs) + ")$", listener=_Revoke(self)
            )
            log.info("ingest started: group %s, packing into %d partitions", self.group, self._partitions)
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(timeout_ms=POLL_MS, max_records=BATCH_RECORDS)
                if not batch:
                    continue
                async with self.lock:
                    retry = await self._process(batch)
                if retry:  # outside the lock: a rebalance need not wait for the backoff
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self._backoff.next())
                else:
                    self._backoff.reset()
        finally:
            await self._close()
            self._stopped.set()

    async def resume_from_faust(self) -> None:
        """Upgrade from the faust ingest agent: input partitions this group never committed start where the faust
        group `<app_id>` left them, not at the beginning of the input's retention (which would apply days of
        records to the state a second time). Done before joining the group, by committing those offsets as this
        group's own; when other members already run (the group is not empty) they have done it."""
        security = aiokafka_kwargs(self.settings)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap_list, **security)
        try:
            await admin.start()
            inputs = (self.settings.topic_requests, self.settings.topic_lifecycle)
            # All topics' metadata (no names): naming a missing topic would create it (see `run`).
            parts = sorted(
                TopicPartition(t["topic"], p["partition"])
                for t in await admin.describe_topics()
                if t["topic"] in inputs
                for p in t["partitions"]
            )
            ours = await admin.list_consumer_group_offsets(self.group, partitions=parts)
            fresh = [tp for tp in parts if tp not in ours or ours[tp].offset < 0]
            if not fresh:
                return
            theirs = await admin.list_consumer_group_offsets(self.settings.app_id, partitions=fresh)
            seeds = {tp: meta.offset for tp, meta in theirs.items() if meta is not None and meta.offset >= 0}
            if not seeds:
                return
            seeder = AIOKafkaConsumer(
                bootstrap_servers=self.settings.bootstrap_list,
                group_id=self.group,
                enable_auto_commit=False,
                **security,
            )
            await seeder.start()
            try:
                seeder.assign(list(seeds))
                await seeder.commit(seeds)
            finally:
                await seeder.stop()
            for tp, offset in sorted(seeds.items()):
                log.info(
                    "ingest %s[%d]: starting at offset %d (faust group %s)",
                    tp.topic,
                    tp.partition,
                    offset,
                    self.settings.app_id,
                )
        except Exception:  # the default (earliest) is safe, only slower and with duplicates
            log.exception("could not take over the faust group's input offsets: starting from the earliest")
        finally:
            await admin.close()

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        """Pack, send, await every acknowledgement, then commit what was acknowledged; rewind the input partitions
        whose records must be sent again. True when some must (the caller backs off before the next batch)."""
        assert self._consumer is not None
        started = time.perf_counter()
        # In the order the records were written (their timestamps), each partition's own order kept: a lifecycle
        # event produced before a request reaches the keyed topic before it, as when each is read on arrival.
        merged = heapq.merge(*batch.values(), key=lambda m: m.timestamp)
        records = [(m.topic, m.partition, m.offset, m.key, m.value) for m in merged]
        out = self.processor.pack_batch(records, self.partition_of)
        messages = [m for m in outgoing(out, self.keyed_topic, self.settings.topic_dlq) if m.channel == "keyed"]
        keyed_again, letters_again = await asyncio.gather(
            self._send_all(messages), self._write_letters(out.dead_letters)
        )
        again = [m.carries for m in keyed_again] + [{letter.source: letter.offset} for letter in letters_again]
        ends = {(tp.topic, tp.partition): msgs[-1].offset + 1 for tp, msgs in batch.items() if msgs}
        commit, rewind = plan_offsets(ends, again)
        assigned = self._consumer.assignment()
        offsets = {tp: commit[(tp.topic, tp.partition)] for tp in batch if (tp.topic, tp.partition) in commit}
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            if offsets:
                await self._consumer.commit(offsets)
        except Exception:  # nothing is lost: a later commit covers these offsets, or the next owner re-reads them
            log.warning("ingest: committing %d input partitions failed", len(offsets), exc_info=True)
        for (topic, partition), offset in sorted(rewind.items()):
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                self._consumer.seek(tp, offset)
        if rewind:
            log.warning(
                "ingest: %d of %d messages not acknowledged: reading %s again",
                len(again),
                len(messages) + len(out.dead_letters),
                ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(rewind.items())),
            )
        self._seconds.observe(time.perf_counter() - started)
        self._records.inc(len(records) - sum(ends[s] - o for s, o in rewind.items()))
        return bool(rewind)

    async def _write_letters(self, letters: Sequence[Letter]) -> list[Letter]:
        """Write the batch's dead letters to the dead-letter sink; the letters to send again. A letter the sink
        has (acknowledged by the broker) is counted in keywatch_dead_letters_total; one it dropped counts as done.
        """
        if not letters:
            return []
        try:
            await self.letters.write(letters)
        except Undelivered as exc:
            missing = {id(letter) for letter in exc.again} | {id(letter) for letter in exc.dropped}
            again: list[Letter] = exc.again
        else:
            missing, again = set(), []
        for letter in letters:
            if id(letter) not in missing:
                self.metrics.dead_letters.labels(letter.reason_code).inc()
        return again

    async def _send_all(self, messages: list[Outgoing]) -> list[Outgoing]:
        """Send every message and wait for every acknowledgement; the messages to send again.

        A message that can never be sent is dropped (logged, counted) and counts as done.
        """
        assert self._producer is not None
        pending: list[tuple[Outgoing, asyncio.Future[Any]]] = []
        failed: list[tuple[Outgoing, BaseException]] = []
        for message in messages:
            try:
                future = await self._producer.send(
                    message.topic, value=message.value, key=message.key, partition=message.partition
                )
            except Exception as exc:  # raised before the broker saw it (e.g. larger than max_request_size)
                failed.append((message, exc))
            else:
                pending.append((message, future))
        results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
        for (message, _), result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                failed.append((message, result))
        again: list[Outgoing] = []
        for message, error in failed:
            if isinstance(error, asyncio.CancelledError):
                raise error
            verdict = classify(error)
            action = "retried" if verdict.retry else "dropped"
            self.metrics.send_failures.labels(message.channel, verdict.reason, action).inc()
            where = ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(message.carries.items()))
            log.log(
                logging.WARNING if verdict.retry else logging.ERROR,
                "ingest: a %d-byte %s message for %s (input %s) was not sent: %s: %s (%s)",
                len(message.value),
                message.channel,
                message.topic,
                where,
                type(error).__name__,
                error,
                "will retry" if verdict.retry else "dropped: it can never be sent",
            )
            if verdict.retry:
                again.append(message)
        return again

    async def offsets(self, probe: GroupOffsets) -> Offsets | None:
        """(committed offset, highwater) of each input partition this worker has assigned; None while that cannot
        be known (not started, rebalancing, the broker not answering)."""
        consumer = self._consumer
        if consumer is None or self.rebalancing or self._stopping.is_set():
            return None
        return await measure(self.group, consumer.assignment(), probe)

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in flight (sent and committed), leave the group, stop the clients."""
        self._stopping.set()
        if not self._running:
            return
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout_s)
        except TimeoutError:
            log.warning("ingest did not stop within %.0fs", timeout_s)

    async def _close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception:  # stopping must not hide why we stop
                    log.exception("stopping an ingest client failed")
