"""The faust app: detect agent on the keyed topic with the state table; ingest beside it (`stream/ingest.py`).

Ingest reads the input topics with a plain aiokafka consumer in batches (faust's cost is per message) and
packs each batch into one keyed message per keyed-topic partition; it runs as a task of this app, in the same
event loop, and stops (sent and committed) before faust's producer is flushed at shutdown.

The agent runs with concurrency=1 (faust 0.15.3 can commit past a message still in flight with more; parallelism
comes from partitions and workers), values are raw bytes we decode ourselves (so bad input reaches the DLQ instead
of faust's decoder), and state is a plain table of compact per-key values, not a windowed table. Table writes go to
the changelog partition of the keyed message being processed; every key of a packed message hashes to that
partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, cast

import faust
from aiokafka.errors import MessageSizeTooLargeError

from keywatch.backoff import Backoff
from keywatch.config import ConfigError, Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.deadletter import PRODUCER_MAX_REQUEST_BYTES
from keywatch.core import hygiene
from keywatch.core.codec import peek
from keywatch.core.engine import Engine
from keywatch.core.state import KeyRegistryEntry
from keywatch.http import serve
from keywatch.kafka_admin import describe_missing, input_topics
from keywatch.logs import REPEAT_INTERVAL_S, report_repeats
from keywatch.memory import release_free_memory
from keywatch.metrics import Metrics
from keywatch.pipeline.ingest import Topics, internal
from keywatch.pipeline.keycap import KeyCap
from keywatch.pipeline.processor import Processor
from keywatch.progress import ProgressTracker, RecoveryClock
from keywatch.redact import Redactor
from keywatch.security import faust_kwargs
from keywatch.sinks.alertmanager import AlertmanagerSink
from keywatch.sinks.base import Channel, Outputs, OutputSink, SinkSet, Undeliverable
from keywatch.sinks.webhook import WebhookSink
from keywatch.stream.delivery import classify
from keywatch.stream.ingest import IngestStage
from keywatch.stream.kafka_internals import (
    changelog_batch,
    changelog_topic_name,
    codec_available,
    consumer_connected,
    current_event_is,
    faust_assignment,
    faust_producer,
    hold_stream_flow,
    set_persisted_offset,
    table_store,
)
from keywatch.stream.kafka_sinks import Headers, TopicAlertSink, TopicLetterSink
from keywatch.stream.lag import MEASURE_TIMEOUT_S, GroupOffsets, Offsets, measure

log = logging.getLogger(__name__)

DETECT_BATCH_MESSAGES = 16  # most keyed messages the detect agent processes between two acknowledgement waits
DETECT_BATCH_WAIT_S = 0.005  # how long it waits for more once one has arrived (faust's `take_events` `within`)
DETECT_FLUSH_RECORDS = 2000  # within a batch, records after which it waits for acknowledgements before going on


class FaustSink:
    """Sends through faust's producer; `settle()` waits until what was sent is acknowledged.

    A message Kafka can never take (too large, refused: `stream/delivery.py`) is dropped, logged and counted in
    keywatch_send_failures_total, and `send` raises `Undeliverable` when it knows at once; a retriable failure
    is sent again after an exponential, capped backoff (the agent waits: the backpressure a broker outage should
    cause). Dead letters are awaited in `send`, so keywatch_dead_letters_total counts only acknowledged ones.
    faust alone would log a warning for a failed acknowledgement and lose the message.
    """

    def __init__(self, keyed: Any, alerts: Any, dlq: Any, metrics: Metrics, backoff: Backoff | None = None) -> None:
        self._topics = {"keyed": keyed, "alerts": alerts, "dlq": dlq}
        self._metrics = metrics
        self._backoff = backoff or Backoff()
        self._pending: list[tuple[Channel, bytes | None, bytes, Headers | None, int | None, asyncio.Future[Any]]] = []

    async def send(
        self,
        channel: Channel,
        key: bytes | None,
        value: bytes,
        headers: Headers | None = None,
        *,
        partition: int | None = None,
    ) -> None:
        """Buffer one message on the channel's topic, to `partition` if given (else the key's); a dead letter:
        send it and wait for the acknowledgement."""
        while True:
            try:
                future = await self._topics[channel].send(key=key, value=value, headers=headers, partition=partition)
            except Exception as exc:
                await self._failed(channel, value, exc)  # raises Undeliverable when it can never be sent
                continue
            if channel != "dlq":
                self._pending.append((channel, key, value, headers, partition, future))
                return
            try:
                await future
            except Exception as exc:
                await self._failed(channel, value, exc)
                continue
            self._backoff.reset()
            return

    async def settle(self) -> None:
        """Wait for the acknowledgement of every message buffered since the last call; send failed ones again
        (retriable) or drop them (never deliverable)."""
        while self._pending:
            pending, self._pending = self._pending, []
            for channel, key, value, headers, partition, future in pending:
                try:
                    await future
                except Exception as exc:
                    with contextlib.suppress(Undeliverable):  # dropped: logged and counted in _failed
                        await self._failed(channel, value, exc)
                        await self.send(channel, key, value, headers, partition=partition)
        self._backoff.reset()

    async def _failed(self, channel: Channel, value: bytes, exc: BaseException) -> None:
        """Count and log a failed send; back off if it is worth retrying, else raise Undeliverable."""
        verdict = classify(exc)
        self._metrics.send_failures.labels(channel, verdict.reason, "retried" if verdict.retry else "dropped").inc()
        topic = self._topics[channel].get_topic_name()
        if not verdict.retry:
            log.error(
                "a %d-byte message for %s can never be sent (%s: %s): dropped", len(value), topic, _name(exc), exc
            )
            raise Undeliverable(topic) from exc
        delay = self._backoff.next()
        log.warning("a message for %s was not sent (%s: %s): retrying in %.1fs", topic, _name(exc), exc, delay)
        await asyncio.sleep(delay)


def _name(exc: BaseException) -> str:
    """The name of the error that counts (faust wraps aiokafka's in ProducerSendError)."""
    return type(exc.__cause__ or exc).__name__


class TableView:
    """The faust table seen as a MutableMapping[bytes, bytes] (what Processor.detect expects), with its changelog
    written in batches.

    Writes and deletions go to the table's store at once and are remembered; `flush(partition)` sends them to
    that partition of the table's changelog topic as aiokafka batches (on faust's own producer), waits for the
    broker's acknowledgement and records the last offset as the store's persisted offset (what faust does per
    write). The detect agent flushes after every batch of keyed messages, and within one every 2,000 records
    (`select` tells the partition each message's writes belong to), before the batch counts as processed, so
    an offset faust commits never runs ahead of the state it produced (at-least-once, as before), and a key
    written by several messages of a batch is written to the changelog once.

    faust's own path (`table[key] = value`: one `send_soon` per write into its ProducerBuffer, drained one
    message per event-loop turn, at most 100 per "ebb") fell behind the detect agent: 200,000 unsent writes held
    in memory after 300,000 records over 100,000 keys (1.9 GB resident; `bench/run`).
    """

    def __init__(
        self, table: Any, producer: Callable[[], Any], metrics: Metrics | None = None, codec: str = "none"
    ) -> None:
        self._table = table
        self._producer = producer
        self._codec = codec
        self._metrics = metrics or Metrics()
        self._partition = 0  # the changelog partition the next writes belong to (`select`)
        self._pending: dict[int, dict[bytes, bytes | None]] = {}

    def select(self, partition: int) -> None:
        """The writes from here on belong to changelog `partition` (the keyed message's: its keys, their
        forwards and evictions all hash there)."""
        self._partition = partition

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """Current state bytes of a key (read from the table's store: faust's own `get` adds only a sensor call and
        a KeyError per missing key)."""
        value = table_store(self._table).get(key)
        if value is None:
            return default
        return value if type(value) is bytes else bytes(value)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        table_store(self._table)[key] = value
        self._pending.setdefault(self._partition, {})[key] = value

    def pop(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """Delete a key's state (a tombstone on the changelog); its old value, or `default`."""
        value = self.get(key)
        if value is None:
            return default
        del table_store(self._table)[key]
        self._pending.setdefault(self._partition, {})[key] = None
        return value

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every key and state this worker holds (active and standby partitions)."""
        return [(bytes(k), bytes(v)) for k, v in table_store(self._table).items()]

    @property
    def pending(self) -> int:
        """Writes not flushed yet (a key written twice since the last flush counts once)."""
        return sum(len(writes) for writes in self._pending.values())

    async def flush_all(self) -> int:
        """`flush` every partition with pending writes, all at once; the number of writes sent."""
        counts = await asyncio.gather(*(self.flush(partition) for partition in sorted(self._pending)))
        return sum(counts)

    async def flush(self, partition: int) -> int:
        """Send the pending writes of changelog `partition` and wait for the acknowledgement; the number sent.

        Only the last write of a key since the last flush is sent. A retriable failure is retried after an
        exponential, capped backoff until it succeeds or the worker stops: the agent waits, which is the
        backpressure a broker outage should cause. A failure that can never succeed (`stream/delivery.py`) is
        not retried: the writes are sent one by one and only those Kafka refuses are dropped (logged, counted;
        the state stays in the local store, but a worker that recovers this partition from the changelog will
        not have it).
        """
        writes = self._pending.pop(partition, None)  # a write made meanwhile goes to the next flush
        if not writes:
            return 0
        producer = self._producer()
        topic = changelog_topic_name(self._table)
        backoff = Backoff()
        while True:
            try:
                last: int | None = await _send_batches(producer, topic, partition, writes, self._codec)
                break
            except Exception as exc:
                verdict = classify(exc)
                if not verdict.retry:
                    last = await self._send_one_by_one(producer, topic, partition, writes)
                    break
                self._metrics.send_failures.labels("changelog", verdict.reason, "retried").inc()
                delay = backoff.next()
                log.warning(
                    "changelog %s[%d]: %d writes not acknowledged (%s: %s); retrying in %.1fs",
                    topic,
                    partition,
                    len(writes),
                    _name(exc),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
        if last is not None:
            set_persisted_offset(self._table, topic, partition, last)
        return len(writes)

    async def _send_one_by_one(
        self, producer: Any, topic: str, partition: int, writes: dict[bytes, bytes | None]
    ) -> int | None:
        """Send each write on its own, dropping those Kafka can never take; the last offset written."""
        last: int | None = None
        backoff = Backoff()
        for key, value in writes.items():
            while True:
                try:
                    last = await _send_batches(producer, topic, partition, {key: value}, self._codec)
                    break
                except Exception as exc:
                    verdict = classify(exc)
                    action = "retried" if verdict.retry else "dropped"
                    self._metrics.send_failures.labels("changelog", verdict.reason, action).inc()
                    if not verdict.retry:
                        log.error(
                            "changelog %s[%d]: the %d-byte state of %r can never be written (%s: %s): dropped",
                            topic,
                            partition,
                            len(value or b""),
                            key,
                            _name(exc),
                            exc,
                        )
                        break
                    await asyncio.sleep(backoff.next())
        return last


async def _send_batches(
    producer: Any, topic: str, partition: int, writes: dict[bytes, bytes | None], codec: str = "none"
) -> int:
    """Send `writes` to one partition in as few batches as the producer's batch size allows, compressed with
    `codec`; the offset of the last record once every batch is acknowledged."""
    sent: list[tuple[asyncio.Future[Any], int]] = []
    batch, count = changelog_batch(producer, codec), 0
    for key, value in writes.items():
        while batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next one
            if count == 0:  # aiokafka always takes a batch's first record; any producer that would not must not loop
                raise MessageSizeTooLargeError(
                    f"a state of {len(value or b'')} bytes does not fit in a changelog batch"
                )
            sent.append((await producer.send_batch(batch, topic, partition=partition), count))
            batch, count = changelog_batch(producer, codec), 0
        count += 1
    sent.append((await producer.send_batch(batch, topic, partition=partition), count))
    results = await asyncio.gather(*(future for future, _ in sent))
    return int(results[-1].offset) + sent[-1][1] - 1


class Health:
    """What /readyz reports. Starts before faust (and before Kafka answers), so it never needs the app running."""

    def __init__(self) -> None:
        self.broker_reachable = False
        self.faust_started = False
        self.assigned = False
        self.missing_topics: dict[str, str] = {}
        self.inputs_checked = False

    def set_reachable(self, reachable: bool) -> None:
        """The outcome of the latest attempt to reach the cluster (before faust starts)."""
        self.broker_reachable = reachable

    def set_missing_topics(self, missing: dict[str, str]) -> None:
        """The outcome of the latest check of the input topics (topic -> the setting naming it)."""
        self.missing_topics = dict(missing)
        self.inputs_checked = True

    def input_topics_present(self) -> bool:
        """Every input topic was there at the latest check (False before the first one)."""
        return self.inputs_checked and not self.missing_topics


def build_alert_sinks(settings: Settings, kafka: FaustSink, metrics: Metrics) -> SinkSet[Alert]:
    """The alert sinks these settings ask for: the alert topic (required); Alertmanager and the webhook, each if
    its URL is set (optional: their outages never hold up the topic)."""
    sinks: list[OutputSink[Alert]] = [TopicAlertSink(kafka)]
    if settings.alertmanager_url:
        sinks.append(
            AlertmanagerSink(
                settings.alertmanager_url,
                batch_size=settings.alertmanager_batch_size,
                interval_s=settings.alertmanager_flush_seconds,
                metrics=metrics,
            )
        )
    if settings.webhook_url and settings.webhook_secret is not None:
        sinks.append(
            WebhookSink(
                settings.webhook_url,
                settings.webhook_secret.get_secret_value().encode(),
                max_queue=settings.webhook_max_queue,
                metrics=metrics,
            )
        )
    return SinkSet(sinks)


def create_app(settings: Settings, engine: Engine, metrics: Metrics | None = None) -> faust.App:
    """Build the faust app for these settings; nothing connects until the worker starts."""
    if not codec_available(settings.changelog_compression):
        raise ConfigError(
            f"KEYWATCH_CHANGELOG_COMPRESSION is {settings.changelog_compression}, whose codec is not installed "
            "(aiokafka needs the cramjam package for snappy, lz4 and zstd): install cramjam or choose gzip or none"
        )
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,  # the changelog and faust's leader topic
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        table_cleanup_interval=60.0,
        producer_max_batch_size=512 * 1024,  # a keyed message's changelog writes in one batch (TableView.flush)
        producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,  # what a dead letter is bounded for
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        **faust_kwargs(settings),
    )
    keyed = app.topic(
        f"{settings.app_id}-keyed",
        partitions=settings.partitions,
        internal=True,
        key_type=bytes,
        value_type=bytes,
    )
    alerts = app.topic(settings.topic_alerts, key_type=bytes, value_type=bytes)
    dlq = app.topic(settings.topic_dlq, key_type=bytes, value_type=bytes)
    table = app.Table("keys", partitions=settings.partitions, key_type=bytes, value_type=bytes)
    metrics = metrics or Metrics(process=True, tenant_labels=settings.metrics_tenant_labels)
    if settings.redaction_key is None:
        log.warning("KEYWATCH_REDACTION_KEY is not set: redacted secrets get a per-process hash")
        redactor = Redactor()
    else:
        redactor = Redactor(settings.redaction_key.get_secret_value().encode())
    key_cap = KeyCap(settings.max_keys, settings.partitions) if settings.max_keys else None
    metrics.keys_max.set(settings.max_keys)
    kafka_sink = FaustSink(keyed, alerts, dlq, metrics)
    outputs = Outputs(kafka_sink, build_alert_sinks(settings, kafka_sink, metrics), TopicLetterSink(kafka_sink))
    processor = Processor(
        engine,
        outputs,
        Topics(requests=settings.topic_requests, lifecycle=settings.topic_lifecycle),
        max_record_bytes=settings.max_record_bytes,
        metrics=metrics,
        redactor=redactor,
        key_cap=key_cap,
    )
    # faust's own aiokafka producer: started before the agents, stopped after them (and after the last commit)
    view = TableView(table, lambda: faust_producer(app), metrics, settings.changelog_compression)
    store = cast("MutableMapping[bytes, bytes]", view)
    detect_seconds = metrics.processing.labels("detect")
    detect_records = metrics.processed_records.labels("detect")
    ingest = IngestStage(settings, processor, metrics, keyed.get_topic_name())
    processor.detect_step.partition_of = ingest.keyed_partition  # hand-offs packed per partition, as ingest packs
    health = Health()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _on_assigned(app: Any, assigned_partitions: Any, **_: Any) -> None:
        health.assigned = True
        if key_cap is not None:
            key_cap.stale = True  # rebuilt from the table on the next keyed message, after recovery
        metrics.rebalances.inc()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def _hold_streams(app: Any, **_: Any) -> None:
        # faust (0.15.3) resumes the keyed-topic partitions after recovery and only then seeks them to their
        # committed offsets, with its fetcher already running (it read the changelog): a message fetched in
        # between reached the detect agent and its acknowledgement was lost, so the group never committed that
        # partition again (seen after a SIGKILL in test_faults). Stop the flow here; faust resumes it once the
        # seek is done (a fetch that returns meanwhile is dropped and faust seeks back to the committed offsets).
        hold_stream_flow(app)

    progress = ProgressTracker(settings.stall_seconds, settings.watchdog_seconds)
    recovery = RecoveryClock()
    probe = GroupOffsets(settings)
    keyed_name = keyed.get_topic_name()
    inputs = input_topics(settings)
    stalls_logged: set[tuple[str, str, int]] = set()

    def readiness() -> dict[str, bool]:
        if not health.faust_started:
            return {
                "broker_reachable": health.broker_reachable,
                "input_topics": health.input_topics_present(),
                "connected": False,
                "assigned": False,
            }
        connected = consumer_connected(app)
        metrics.broker_connected.set(1 if connected else 0)
        return {
            "broker_reachable": health.broker_reachable,
            "input_topics": health.input_topics_present(),
            "connected": connected,
            "assigned": health.assigned,
            "not_rebalancing": not app.rebalancing,
            "recovered": not app.in_recovery,
            "progressing": not progress.stalled(),
        }

    def readiness_details() -> dict[str, Any]:
        details: dict[str, Any] = {}
        if health.missing_topics:
            details["missing_topics"] = [
                {"topic": topic, "setting": setting} for topic, setting in health.missing_topics.items()
            ]
        stalled = progress.stalled()
        if stalled:
            details["stalled"] = [p.as_json() for p in stalled]
        return details

    def liveness() -> dict[str, Any]:
        # A measured stall (lag, no progress) trips it: an unreachable broker, a rebalance or a recovery makes the
        # offsets unknown, and unknown is never a stall (keywatch.progress). A recovery that outlasts the
        # watchdog trips it too (RecoveryClock).
        problems: dict[str, Any] = {}
        tripped = progress.watchdog_tripped()
        if tripped:
            problems["watchdog"] = [p.as_json() for p in tripped]
        recovering_s = recovery.seconds(time.monotonic())
        if settings.watchdog_seconds and recovering_s >= settings.watchdog_seconds:
            problems["recovering_seconds"] = round(recovering_s, 1)
        return problems

    @app.task  # type: ignore[untyped-decorator]
    async def _started() -> None:
        health.faust_started = True
        health.broker_reachable = True  # faust only starts once `keywatch worker` has reached the cluster
        if settings.metrics_port and getattr(app, "keywatch_http", None) is None:
            app.keywatch_http = await serve(  # type: ignore[attr-defined]
                metrics, readiness, settings.metrics_host, settings.metrics_port, readiness_details, liveness
            )

    @app.timer(interval=15.0)  # type: ignore[untyped-decorator]
    async def _state_gauges() -> None:
        metrics.recovering.set(1 if app.in_recovery else 0)
        metrics.ready.set(1 if all(readiness().values()) else 0)
        if app.in_recovery:
            return
        sizes = [0, 0]  # keys, bytes

        def registries() -> Iterator[KeyRegistryEntry]:
            for value in table.values():
                sizes[0] += 1
                sizes[1] += len(value)
                with contextlib.suppress(ValueError):  # an undecodable state is in no hygiene status
                    yield peek(value)[0]

        by_status = hygiene.count(registries())
        metrics.keys_tracked.set(sizes[0])
        metrics.state_bytes.set(sizes[1])
        for status, keys in by_status.items():
            metrics.keys_by_hygiene.labels(status).set(keys)

    async def detect_offsets() -> Offsets | None:
        if not health.assigned or app.rebalancing or app.in_recovery:
            return None  # nothing is processed while faust recovers or rebalances: not a stall
        try:
            assigned = [tp for tp in faust_assignment(app) if tp.topic == keyed_name]  # not the changelog
        except Exception:  # faust's consumer not started (yet, or any more)
            return None
        return await measure(settings.app_id, assigned, probe)

    async def check_inputs() -> None:
        # After start-up too: an input topic deleted under a running worker is named by /readyz (ingest's pattern
        # subscription takes it up again once it exists, at its next metadata refresh).
        try:
            existing = await asyncio.wait_for(probe.topics(), MEASURE_TIMEOUT_S)
        except Exception:  # unknown: keep the last answer (the `connected` check covers an absent broker)
            return
        missing = {topic: name for topic, name in inputs.items() if topic not in existing}
        if missing.keys() - health.missing_topics.keys():
            log.warning("input topic %s does not exist (any more): not ready until it does", describe_missing(missing))
        health.set_missing_topics(missing)

    @app.timer(interval=max(1.0, min(5.0, settings.stall_seconds / 2)))  # type: ignore[untyped-decorator]
    async def _measure_progress() -> None:
        await check_inputs()
        now = time.monotonic()
        recovery.observe(bool(app.in_recovery), now)
        ingest_offsets, keyed_offsets = await asyncio.gather(ingest.offsets(probe), detect_offsets())
        progress.observe(ingest.group, ingest_offsets, now)
        progress.observe(settings.app_id, keyed_offsets, now)
        metrics.export_progress(progress)
        stalled = {(p.group, p.topic, p.partition): p for p in progress.stalled()}
        for key in stalled.keys() - stalls_logged:  # once per stall, not once per measurement
            p = stalled[key]
            log.warning(
                "%s %s[%d] is stalled: %d records behind and no progress for %.0fs (KEYWATCH_STALL_SECONDS)",
                p.group,
                p.topic,
                p.partition,
                p.lag,
                p.stalled_seconds,
            )
        stalls_logged.clear()
        stalls_logged.update(stalled)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _probe_close(app: Any, **_: Any) -> None:
        await probe.close()

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def _release_memory() -> None:
        release_free_memory()

    @app.timer(interval=REPEAT_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def _report_repeats() -> None:
        report_repeats()

    @app.task  # type: ignore[untyped-decorator]
    async def _ingest() -> None:
        try:
            await ingest.run()
        except Exception as exc:  # a worker that does not ingest must not look healthy
            log.exception("ingest stopped")
            await app.crash(exc)

    # The output sinks: started with the app, stopped once ingest (whose dead letters go through them) has stopped.
    sinks: SinkSet[Any] = SinkSet([outputs.alerts, outputs.letters, ingest.letters])

    @app.task  # type: ignore[untyped-decorator]
    async def _sinks_start() -> None:
        await sinks.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _ingest_stop(app: Any, **_: Any) -> None:
        await ingest.stop()
        await sinks.stop()

    @app.agent(keyed, concurrency=1)
    async def detect(stream: Any) -> None:
        async def acknowledged() -> None:
            # The alerts and forwards, then the state, acknowledged before the messages count as processed.
            await kafka_sink.settle()
            await view.flush_all()

        # The keyed messages waiting, up to DETECT_BATCH_MESSAGES (faust acks them once the batch is done): one wait
        # for the broker's acknowledgements per batch, not per message, so small messages (low rates, hand-offs)
        # do not queue behind round trips.
        async for events in stream.take_events(DETECT_BATCH_MESSAGES, within=DETECT_BATCH_WAIT_S):
            started = time.perf_counter()
            records = unflushed = 0
            for event in events:
                if unflushed >= DETECT_FLUSH_RECORDS:  # big messages (a backlog): acknowledged as they go
                    await acknowledged()
                    unflushed = 0
                msg = event.message
                view.select(msg.partition)
                try:
                    with current_event_is(event):  # the rocksdb:// store reads and writes the event's partition
                        n = await processor.detect_message(
                            msg.key, msg.value, store, msg.partition, msg.offset, msg.topic
                        )
                except Exception as exc:
                    n = 1
                    log.exception("detect failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                    await processor.dead_letter(msg.topic, msg.partition, msg.offset, msg.key, msg.value, internal(exc))
                records += n
                unflushed += n
            await acknowledged()
            detect_seconds.observe(time.perf_counter() - started)
            detect_records.inc(records)

    app.keywatch_processor = processor  # type: ignore[attr-defined]
    app.keywatch_sinks = sinks  # type: ignore[attr-defined]
    app.keywatch_ingest = ingest  # type: ignore[attr-defined]
    app.keywatch_metrics = metrics  # type: ignore[attr-defined]
    app.keywatch_health = health  # type: ignore[attr-defined]
    app.keywatch_readiness = readiness  # type: ignore[attr-defined]
    app.keywatch_readiness_details = readiness_details  # type: ignore[attr-defined]
    app.keywatch_liveness = liveness  # type: ignore[attr-defined]
    app.keywatch_progress = progress  # type: ignore[attr-defined]
    return app
