"""Every use of a faust or aiokafka private attribute, in one place.

Each function is self-contained, says why the public API is not enough, and names the versions it was checked
against (faust-streaming 0.15.3, aiokafka 0.14.0: both pinned exactly). `tests/unit/test_kafka_internals.py`
fails loudly when an upgrade removes an attribute used here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiokafka import TopicPartition


def consumer_connected(app: Any) -> bool:
    """Whether faust's consumer has a live connection to its group coordinator.

    faust exposes nothing for this, so it is read from aiokafka's internals (checked: faust 0.15.3, aiokafka
    0.14.0): faust's `Consumer._thread._consumer` is the AIOKafkaConsumer; its group coordinator's node id
    (`_coordinator.coordinator_id`) is cleared when a request to it fails (`coordinator_dead`), and that node's
    connection in `_client._conns` reports `connected()` False as soon as the socket closes; heartbeats every few
    seconds keep both current while the broker is up.
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

    aiokafka 0.14.0's admin client has no ListOffsets, and the consumer's `end_offsets()` adds the topic of a
    partition it has no leader for to the topics its metadata requests name (`Fetcher._proc_offset_requests` calls
    `client.add_topic`), which creates a deleted or misspelled input topic on a broker with
    `auto.create.topics.enable=true` (seen: an input topic deleted under a running worker came back with one
    partition). So the leaders come from all-topic metadata (`describe_topics()` without names, which never
    creates a topic) and the request is aiokafka's own `OffsetRequest`, sent with the admin client's private
    `_send_request_to_node` (checked: aiokafka 0.14.0; faust 0.15.3 is not involved).
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


def faust_internal_topics(app: Any) -> list[str]:
    """The topics faust creates for `app` at start-up: every table's changelog and the leader assignor's topic.

    keywatch checks their replication against the cluster before faust starts (and fails with a clear message
    instead of faust's traceback). faust has no public list of them: the leader topic's name is
    `LeaderAssignor._leader_topic_name` (faust 0.15.3: f"{conf.id}-__assignor-__leader", declared with
    `topic_replication_factor` like the changelogs).
    """
    names = [table.changelog_topic.get_topic_name() for table in app.tables.values()]
    names.append(str(app._leader_assignor._leader_topic_name))
    return names
