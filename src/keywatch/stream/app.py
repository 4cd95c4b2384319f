"""The faust app: detect agent on the keyed topic with the state table; ingest beside it (`stream/ingest.py`).

Ingest reads the input topics with a plain aiokafka consumer in batches (faust's cost is per message) and
packs each batch into one keyed message per keyed-topic partition; it runs as a task of this app, in the same
event loop, and stops (sent and committed) before faust's producer is flushed at shutdown.

Per ../shared/notes/faust-pitfalls.md: the agent runs with concurrency=1 (parallelism comes from partitions and
workers), values are raw bytes we decode ourselves (so bad input reaches the DLQ instead of faust's decoder),
and state is a plain table of compact per-key values, not a windowed table. Table writes go to the changelog
partition of the keyed message being processed; every key of a packed message hashes to that partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any, cast

import faust

from keywatch.config import Settings
from keywatch.core.engine import Engine
from keywatch.http import serve
from keywatch.metrics import Metrics
from keywatch.pipeline.processor import KeyCap, Processor, Topics, internal
from keywatch.redact import Redactor
from keywatch.security import faust_kwargs
from keywatch.sinks.alertmanager import AlertmanagerSink, TeeSink
from keywatch.sinks.base import Channel, Sink
from keywatch.stream.ingest import IngestStage

log = logging.getLogger(__name__)


class FaustSink:
    """Sends through faust's producer, so sends are flushed before offsets are committed."""

    def __init__(self, keyed: Any, alerts: Any, dlq: Any) -> None:
        self._topics = {"keyed": keyed, "alerts": alerts, "dlq": dlq}

    async def send(self, channel: Channel, key: bytes | None, value: bytes) -> None:
        """Buffer one message on the channel's topic."""
        await self._topics[channel].send(key=key, value=value)


class TableView:
    """The faust table seen as a MutableMapping[bytes, bytes] (what Processor.detect expects)."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """Current state bytes of a key."""
        value = self._table.get(key)
        return default if value is None else bytes(value)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._table[key] = value

    def pop(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """Delete a key's state (a tombstone on the changelog); its old value, or `default`."""
        value = self.get(key)
        if value is None:
            return default
        del self._table[key]
        return value

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every key and state this worker holds (active and standby partitions)."""
        return [(bytes(k), bytes(v)) for k, v in self._table.items()]


class Health:
    """What /readyz reports. Starts before faust (and before Kafka answers), so it never needs the app running."""

    def __init__(self) -> None:
        self.broker_reachable = False
        self.faust_started = False
        self.assigned = False

    def set_reachable(self, reachable: bool) -> None:
        """The outcome of the latest attempt to reach the cluster (before faust starts)."""
        self.broker_reachable = reachable


def consumer_connected(app: Any) -> bool:
    """Whether faust's consumer has a live connection to its group coordinator.

    Read from aiokafka's internals (faust exposes nothing): the group coordinator's node id is cleared when a
    request to it fails (`coordinator_dead`), and its connection reports `connected()` False as soon as the
    socket closes; heartbeats every few seconds keep both current while the broker is up.
    """
    try:
        from aiokafka.client import ConnectionGroup

        consumer = app.consumer._thread._consumer
        if consumer is None:
            return False
        node = consumer._coordinator.coordinator_id
        if node is None:
            return False
        conn = consumer._client._conns.get((node, ConnectionGroup.COORDINATION))
        return conn is not None and bool(conn.connected())
    except AttributeError:
        return False


def create_app(settings: Settings, engine: Engine, metrics: Metrics | None = None) -> faust.App:
    """Build the faust app for these settings; nothing connects until the worker starts."""
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        table_cleanup_interval=60.0,
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
    sink: Sink = FaustSink(keyed, alerts, dlq)
    if settings.alertmanager_url:
        alertmanager = AlertmanagerSink(settings.alertmanager_url, batch_size=settings.alertmanager_batch_size)
        sink = TeeSink(sink, alertmanager)
        seen = {"posted": 0, "dropped": 0}

        @app.timer(interval=settings.alertmanager_flush_seconds)  # type: ignore[untyped-decorator]
        async def _alertmanager_flush() -> None:
            await alertmanager.flush()
            # The sink counts on its own (drops can happen while queueing); export what changed since last time.
            metrics.alertmanager_posted.inc(alertmanager.posted - seen["posted"])
            metrics.alertmanager_dropped.inc(alertmanager.dropped - seen["dropped"])
            seen.update(posted=alertmanager.posted, dropped=alertmanager.dropped)

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def _alertmanager_close(app: Any, **_: Any) -> None:
            await alertmanager.flush()
            await alertmanager.close()

    processor = Processor(
        engine,
        sink,
        Topics(requests=settings.topic_requests, lifecycle=settings.topic_lifecycle),
        max_record_bytes=settings.max_record_bytes,
        metrics=metrics,
        redactor=redactor,
        key_cap=key_cap,
    )
    store = cast("MutableMapping[bytes, bytes]", TableView(table))
    detect_seconds = metrics.processing.labels("detect")
    detect_records = metrics.processed_records.labels("detect")
    ingest = IngestStage(settings, processor, metrics, keyed.get_topic_name())
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
        app.consumer.stop_flow()

    def readiness() -> dict[str, bool]:
        if not health.faust_started:
            return {"broker_reachable": health.broker_reachable, "connected": False, "assigned": False}
        connected = consumer_connected(app)
        metrics.broker_connected.set(1 if connected else 0)
        return {
            "broker_reachable": health.broker_reachable,
            "connected": connected,
            "assigned": health.assigned,
            "not_rebalancing": not app.rebalancing,
            "recovered": not app.in_recovery,
        }

    @app.task  # type: ignore[untyped-decorator]
    async def _started() -> None:
        health.faust_started = True
        health.broker_reachable = True  # faust only starts once `keywatch worker` has reached the cluster
        if settings.metrics_port and getattr(app, "keywatch_http", None) is None:
            app.keywatch_http = await serve(  # type: ignore[attr-defined]
                metrics, readiness, settings.metrics_host, settings.metrics_port
            )

    @app.timer(interval=15.0)  # type: ignore[untyped-decorator]
    async def _state_gauges() -> None:
        metrics.recovering.set(1 if app.in_recovery else 0)
        metrics.ready.set(1 if all(readiness().values()) else 0)
        if app.in_recovery:
            return
        count = size = 0
        for value in table.values():
            count += 1
            size += len(value)
        metrics.keys_tracked.set(count)
        metrics.state_bytes.set(size)

    @app.task  # type: ignore[untyped-decorator]
    async def _ingest() -> None:
        try:
            await ingest.run()
        except Exception as exc:  # a worker that does not ingest must not look healthy
            log.exception("ingest stopped")
            await app.crash(exc)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _ingest_stop(app: Any, **_: Any) -> None:
        await ingest.stop()

    @app.agent(keyed, concurrency=1)
    async def detect(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            started = time.perf_counter()
            try:
                n = await processor.detect_message(msg.key, msg.value, store, msg.partition, msg.offset, msg.topic)
            except Exception as exc:
                n = 1
                log.exception("detect failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                await processor.dead_letter(msg.topic, msg.partition, msg.offset, msg.key, msg.value, internal(exc))
            detect_seconds.observe(time.perf_counter() - started)
            detect_records.inc(n)

    app.keywatch_processor = processor  # type: ignore[attr-defined]
    app.keywatch_ingest = ingest  # type: ignore[attr-defined]
    app.keywatch_metrics = metrics  # type: ignore[attr-defined]
    app.keywatch_health = health  # type: ignore[attr-defined]
    app.keywatch_readiness = readiness  # type: ignore[attr-defined]
    return app
