"""Every use of a faust or aiokafka internal, in one place.

An internal is a private (underscore) attribute, or a public-looking one that is not part of faust's or aiokafka's
documented API (faust's store behind a table, its transport consumer, its leader assignor; aiokafka's raw
connections and protocol requests). Each function below is small, says why keywatch needs it and what breaks if it
goes, and every internal it touches is an entry of `INTERNALS`, checked against the versions pinned exactly in
pyproject.toml (`FAUST_VERSION`, `AIOKAFKA_VERSION`). `tests/unit/test_kafka_internals.py` checks each entry
against the installed packages (an upgrade that removes one fails there, naming the function here) and that no
other module of keywatch reaches into a private attribute of anything but itself.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from aiokafka import TopicPartition

FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"


@dataclass(frozen=True)
class Internal:
    """One faust or aiokafka internal the adapter relies on, and how the test proves it is still there.

    `check` is "member" when `attribute` can be found on `owner` (a class or module: methods, properties, class
    attributes), "assigned" when it is an instance attribute the owner's source assigns (`self.<attribute> =`).
    `params` are the first parameter names the adapter relies on (it passes them by position or name).
    """

    owner: str
    attribute: str
    used_by: str
    why: str
    check: Literal["member", "assigned"] = "member"
    params: tuple[str, ...] = ()


INTERNALS: tuple[Internal, ...] = (
    # consumer_connected
    Internal(
        "faust.transport.consumer.ThreadDelegateConsumer",
        "_thread",
        "consumer_connected",
        "faust's consumer runs aiokafka's in a thread object; no public way to reach it",
        check="assigned",
    ),
    Internal(
        "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread",
        "_consumer",
        "consumer_connected",
        "the AIOKafkaConsumer faust created (None until started)",
    ),
    Internal(
        "aiokafka.AIOKafkaConsumer",
        "_coordinator",
        "consumer_connected",
        "the group coordinator: which broker node the group talks to",
        check="assigned",
    ),
    Internal(
        "aiokafka.AIOKafkaConsumer",
        "_client",
        "consumer_connected",
        "the consumer's client, which holds its connections",
        check="assigned",
    ),
    Internal(
        "aiokafka.consumer.group_coordinator.GroupCoordinator",
        "coordinator_id",
        "consumer_connected",
        "the coordinator's node id, cleared when a request to it fails",
        check="assigned",
    ),
    Internal(
        "aiokafka.client.AIOKafkaClient",
        "_conns",
        "consumer_connected",
        "the open connections by (node id, connection group)",
        check="assigned",
    ),
    Internal(
        "aiokafka.client.ConnectionGroup",
        "COORDINATION",
        "consumer_connected",
        "the connection group of coordinator connections (a key of _conns)",
    ),
    Internal(
        "aiokafka.conn.AIOKafkaConnection",
        "connected",
        "consumer_connected",
        "False as soon as the connection's socket closes",
        params=("self",),
    ),
    # list_offsets
    Internal(
        "aiokafka.admin.AIOKafkaAdminClient",
        "_send_request_to_node",
        "list_offsets",
        "the admin client has no ListOffsets; this sends any request to one node",
        params=("self", "node_id", "request"),
    ),
    Internal(
        "aiokafka.protocol.offset",
        "OffsetRequest",
        "list_offsets",
        "aiokafka's ListOffsets request, built by position",
        params=("replica_id", "isolation_level", "topics"),
    ),
    # faust_internal_topics
    Internal(
        "faust.app.base.App",
        "_leader_assignor",
        "faust_internal_topics",
        "faust's leader assignor, the owner of faust's own leader topic",
    ),
    Internal(
        "faust.assignor.leader_assignor.LeaderAssignor",
        "_leader_topic_name",
        "faust_internal_topics",
        "the name of the leader topic faust creates at start-up",
    ),
    Internal(
        "faust.tables.base.Collection",
        "changelog_topic",
        "changelog_topic_name",
        "the table's changelog topic (its name is what TableView writes to and what start-up checks)",
    ),
    # TableView's write path
    Internal(
        "faust.tables.base.Collection",
        "data",
        "table_store",
        "the store behind a table, read and written without faust's per-write changelog send",
    ),
    Internal(
        "faust.streams",
        "_current_event",
        "current_event_is",
        "the event a store's reads and writes belong to (rocksdb:// picks the partition's database by it)",
    ),
    Internal(
        "faust.stores.base.Store",
        "set_persisted_offset",
        "set_persisted_offset",
        "the changelog offset a store has applied, which faust reads on recovery",
        params=("self", "tp", "offset"),
    ),
    Internal(
        "faust.stores.rocksdb.Store",
        "set_persisted_offset",
        "set_persisted_offset",
        "the same for the rocksdb:// store, which persists it on disk",
        params=("self", "tp", "offset"),
    ),
    Internal(
        "faust.transport.drivers.aiokafka.Producer",
        "_ensure_producer",
        "faust_producer",
        "the AIOKafkaProducer inside faust's producer, for create_batch/send_batch",
        params=("self",),
    ),
    Internal(
        "aiokafka.producer.message_accumulator",
        "BatchBuilder",
        "changelog_batch",
        "a record batch with its own compression codec (the producer's applies to every topic it sends)",
        params=("batch_size", "compression_type"),
    ),
    Internal(
        "aiokafka.producer.message_accumulator.MessageAccumulator",
        "_batch_size",
        "changelog_batch",
        "the producer's batch size (producer_max_batch_size), so a compressed batch is as large as the others",
        check="assigned",
    ),
    Internal(
        "aiokafka.AIOKafkaProducer",
        "_message_accumulator",
        "changelog_batch",
        "the producer's accumulator, which knows its batch size",
        check="assigned",
    ),
    *(
        Internal("aiokafka.codec", f"has_{codec}", "codec_available", "whether aiokafka finds the codec's library")
        for codec in ("gzip", "snappy", "lz4", "zstd")
    ),
    *(
        Internal(
            "aiokafka.record.default_records.DefaultRecordBatch",
            f"CODEC_{codec}",
            "changelog_batch",
            "the codec's attribute bits of a record batch",
        )
        for codec in ("GZIP", "SNAPPY", "LZ4", "ZSTD")
    ),
    # the detect agent's consumer
    Internal(
        "faust.transport.consumer.Consumer",
        "stop_flow",
        "hold_stream_flow",
        "stops faust's consumer handing fetched messages to the agents until faust resumes the flow",
        params=("self",),
    ),
    Internal(
        "faust.transport.consumer.Consumer",
        "assignment",
        "faust_assignment",
        "the partitions faust's consumer has assigned now (keyed topic and changelog)",
        params=("self",),
    ),
    # kafka_admin.diagnose
    Internal(
        "aiokafka.conn",
        "create_conn",
        "open_connection",
        "one raw connection, whose errors say TLS or SASL instead of 'Unable to bootstrap'",
        params=("host", "port"),
    ),
)


def consumer_connected(app: Any) -> bool:
    """Whether faust's consumer has a live connection to its group coordinator (/readyz `connected`).

    faust exposes nothing for this, so it is read from aiokafka's internals: faust's `Consumer._thread._consumer`
    is the AIOKafkaConsumer; its group coordinator's node id (`_coordinator.coordinator_id`) is cleared when a
    request to it fails (`coordinator_dead`), and that node's connection in `_client._conns` (keyed by
    `ConnectionGroup.COORDINATION`) reports `connected()` False as soon as the socket closes; heartbeats every few
    seconds keep both current while the broker is up. If one goes, the check would read False for ever (a worker
    never ready): the test of `INTERNALS` fails first.
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


async def list_offsets(admin: Any, partitions: list[TopicPartition], *, latest: bool) -> dict[TopicPartition, int]:
    """The log-end (`latest`) or log-start offset of each partition, fresh from its leader, through an admin
    client; raises KafkaError when one cannot be had (no leader now, an error from the broker).

    The admin client has no ListOffsets, and the consumer's `end_offsets()` adds the topic of a partition it has
    no leader for to the topics its metadata requests name (`Fetcher._proc_offset_requests` calls
    `client.add_topic`), which creates a deleted or misspelled input topic on a broker with
    `auto.create.topics.enable=true` (seen: an input topic deleted under a running worker came back with one
    partition). So the leaders come from all-topic metadata (`describe_topics()` without names, which never
    creates a topic) and the request is aiokafka's own `OffsetRequest`, sent with the admin client's private
    `_send_request_to_node` (aiokafka only; faust is not involved). Without them lag and stalls go unmeasured.
    """
    from aiokafka.errors import KafkaError, for_code
    from aiokafka.protocol.offset import OffsetRequest

    leaders = {
        TopicPartition(t["topic"], p["partition"]): p["leader"]
        for t in await admin.describe_topics()
        if t["error_code"] == 0
        for p in t["partitions"]
    }
    by_node: dict[int, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for tp in partitions:
        node = leaders.get(tp)
        if node is None or node < 0:
            raise KafkaError(f"{tp.topic}[{tp.partition}] has no leader now")
        by_node[node][tp.topic].append((tp.partition, -1 if latest else -2))  # -1 latest, -2 earliest
    out: dict[TopicPartition, int] = {}
    for node, topics in by_node.items():
        response = await admin._send_request_to_node(node, OffsetRequest(-1, 0, list(topics.items())))
        for topic, parts in response.topics:
            for partition, error_code, *info in parts:
                if error_code:
                    raise for_code(error_code)(f"ListOffsets {topic}[{partition}]")
                # v0 answers a list of offsets; v1 and later (timestamp, offset)
                offset = info[0][0] if response.API_VERSION == 0 else info[1]
                out[TopicPartition(topic, partition)] = int(offset)
    return out


def changelog_topic_name(table: Any) -> str:
    """The name of a faust table's changelog topic.

    `Collection.changelog_topic` is how faust names it internally (undocumented; `Topic.get_topic_name()` is
    public). TableView writes the table's changelog itself, and `keywatch worker` checks the topic's replication
    before faust starts: both need the name faust will use, or state goes to a topic faust never recovers from.
    """
    return str(table.changelog_topic.get_topic_name())


def faust_internal_topics(app: Any) -> list[str]:
    """The topics faust creates for `app` at start-up: every table's changelog and the leader assignor's topic.

    keywatch checks their replication against the cluster before faust starts (and fails with a clear message
    instead of faust's traceback). faust has no public list of them: the leader topic's name is
    `App._leader_assignor._leader_topic_name` (f"{conf.id}-__assignor-__leader", declared with
    `topic_replication_factor` like the changelogs). If it goes, start-up fails with AttributeError.
    """
    names = [changelog_topic_name(table) for table in app.tables.values()]
    names.append(str(app._leader_assignor._leader_topic_name))
    return names


def table_store(table: Any) -> MutableMapping[bytes, Any]:
    """The store behind a faust table: its keys and raw values, without faust's table logic.

    faust's `table[key] = value` sends one changelog record per write (`send_soon`), which fell behind the detect
    agent; TableView reads and writes `Collection.data` (the StoreT faust creates on first use) and writes the
    changelog in batches itself. If it goes, every read and write of state fails.
    """
    return cast("MutableMapping[bytes, Any]", table.data)


@contextlib.contextmanager
def current_event_is(event: Any) -> Iterator[None]:
    """Within this block, faust's current event is `event`.

    faust's rocksdb:// store keeps one database per partition and picks it by the current event's partition on
    every read and write (`faust.streams.current_event()`, from the context variable `_current_event`); faust
    sets that per event in the task iterating the stream. The detect agent takes its keyed messages in batches
    (`Stream.take_events`), whose events are pulled by a task of faust's, so the agent sets it itself around
    each message. If it goes, every state read and write under rocksdb:// fails (no current event) and every
    keyed message becomes a dead letter.
    """
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def set_persisted_offset(table: Any, topic: str, partition: int, offset: int) -> None:
    """Record that a table's store holds its changelog `topic[partition]` up to `offset`.

    faust does this itself after each changelog write it sends; TableView sends the writes, so it does it through
    `Store.set_persisted_offset` (a no-op for memory://; rocksdb:// keeps it on disk and recovery reads the
    changelog only after it). If it goes, flush raises AttributeError; skipped, a rocksdb:// worker would replay
    its whole changelog at every start.
    """
    from faust.types import TP

    table.data.set_persisted_offset(TP(topic, partition), offset)


def faust_producer(app: Any) -> Any:
    """The AIOKafkaProducer inside faust's producer (started before the agents, stopped after them).

    TableView sends changelog batches with aiokafka's public `create_batch`/`send_batch`, which faust's Producer
    does not offer; `Producer._ensure_producer()` returns its aiokafka producer (NotReady before it started).
    Using faust's own keeps one producer per worker and faust's shutdown order. If it goes, no state is written.
    """
    return app.producer._ensure_producer()


CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def codec_available(codec: str) -> bool:
    """Whether aiokafka can compress with `codec` here (`has_gzip`: always; `has_snappy`, `has_lz4`, `has_zstd`:
    with cramjam installed)."""
    from aiokafka import codec as codecs

    return codec == "none" or bool(getattr(codecs, f"has_{codec}")())


def changelog_batch(producer: Any, codec: str) -> Any:
    """An empty record batch for `producer.send_batch`, compressed with `codec` (`none`: uncompressed).

    The changelog is keywatch's largest output (one ~1 KB state per key written, `docs/performance.md`) and
    compresses well, but a codec on faust's producer would also apply to the alert topic, which downstream
    consumers read with clients of their own (some without lz4 or zstd). aiokafka's public `create_batch` uses the
    producer's codec, so the batch is built here with aiokafka's `BatchBuilder`, the producer's batch size
    (`_message_accumulator._batch_size`) and the codec's bits (`DefaultRecordBatch.CODEC_GZIP`, `CODEC_SNAPPY`,
    `CODEC_LZ4`, `CODEC_ZSTD`). If it goes, `TableView` cannot write its state (the worker fails at its first
    changelog write, loudly).
    """
    from aiokafka.producer.message_accumulator import BatchBuilder
    from aiokafka.record.default_records import DefaultRecordBatch

    attrs = {
        "none": 0,
        "gzip": DefaultRecordBatch.CODEC_GZIP,
        "snappy": DefaultRecordBatch.CODEC_SNAPPY,
        "lz4": DefaultRecordBatch.CODEC_LZ4,
        "zstd": DefaultRecordBatch.CODEC_ZSTD,
    }
    return BatchBuilder(producer._message_accumulator._batch_size, attrs[codec])


def hold_stream_flow(app: Any) -> None:
    """Stop faust's consumer handing fetched messages to the agents until faust itself resumes the flow.

    faust resumes the keyed-topic partitions after recovery and only then seeks them to their committed offsets,
    with its fetcher already running: a message fetched in between reached the detect agent and its
    acknowledgement was lost. `Consumer.stop_flow()` (faust's transport consumer, not documented) holds the
    agents until faust's `resume_flow()` after the seek. If it goes, the rebalance handler raises AttributeError.
    """
    app.consumer.stop_flow()


def faust_assignment(app: Any) -> set[Any]:
    """The partitions faust's consumer has assigned now (faust TPs: keyed topic and changelog); raises while the
    consumer is not started.

    The detect agent's lag is measured on these. `Consumer.assignment()` is faust's transport consumer's
    (`app.consumer`, not documented). If it goes, the detect group's lag and stalls go unmeasured.
    """
    return set(app.consumer.assignment())


async def open_connection(host: str, port: int, **kwargs: Any) -> Any:
    """One raw connection to a broker (close it with `.close()`), for telling a broker that is down from one
    that rejects us.

    aiokafka's clients turn every failure into "Unable to bootstrap"; `aiokafka.conn.create_conn` (undocumented)
    raises the TLS or SASL error itself. `kwargs` are `create_conn`'s keyword arguments (`request_timeout_ms` and
    those of `keywatch.security.aiokafka_kwargs`). If it goes, `keywatch worker` cannot start.
    """
    from aiokafka.conn import create_conn

    return await create_conn(host, port, **kwargs)
