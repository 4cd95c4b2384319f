"""The faust and aiokafka private attributes `keywatch.stream.kafka_internals` reads still exist (an upgrade that
removes one must fail here, loudly, not turn a readiness check silently false)."""

from __future__ import annotations

import inspect
from importlib.metadata import version
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.consumer.group_coordinator import GroupCoordinator
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from keywatch.stream.kafka_internals import consumer_connected


def test_versions_are_the_ones_checked() -> None:
    """kafka_internals.py was checked against faust-streaming 0.15.3 and aiokafka 0.14.0: re-check it on upgrade."""
    assert version("faust-streaming") == "0.15.3" == faust.__version__
    assert aiokafka.__version__ == "0.14.0"


async def test_the_attributes_consumer_connected_reads_exist() -> None:
    """faust Consumer._thread, its thread's _consumer, aiokafka's _coordinator.coordinator_id and _client._conns."""
    assert "self._thread = self._new_consumer_thread()" in inspect.getsource(ThreadDelegateConsumer.__init__)
    assert "_consumer" in AIOKafkaConsumerThread.__annotations__
    consumer_source = inspect.getsource(aiokafka.AIOKafkaConsumer)
    assert "self._coordinator = GroupCoordinator(" in consumer_source
    assert "self._client = AIOKafkaClient(" in consumer_source
    assert "self.coordinator_id = None" in inspect.getsource(GroupCoordinator.__init__)
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:9")  # never started: nothing connects
    assert client._conns == {}
    assert ConnectionGroup.COORDINATION is not None


def test_the_attributes_list_offsets_uses_exist() -> None:
    """The admin client's _send_request_to_node and aiokafka's OffsetRequest(replica_id, isolation_level, topics)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.offset import OffsetRequest

    send = inspect.signature(AIOKafkaAdminClient._send_request_to_node)
    assert list(send.parameters) == ["self", "node_id", "request"]
    assert list(inspect.signature(OffsetRequest.__init__).parameters) == [
        "self",
        "replica_id",
        "isolation_level",
        "topics",
    ]
    # the consumer path list_offsets avoids: an unknown partition makes end_offsets name its topic in metadata
    from aiokafka.consumer.fetcher import Fetcher

    assert "self._client.add_topic(partition.topic)" in inspect.getsource(Fetcher._proc_offset_requests)


def _app(coordinator_id: int | None, connected: bool | None) -> Any:
    conns = (
        {} if connected is None else {(3, ConnectionGroup.COORDINATION): SimpleNamespace(connected=lambda: connected)}
    )
    consumer = SimpleNamespace(
        _coordinator=SimpleNamespace(coordinator_id=coordinator_id), _client=SimpleNamespace(_conns=conns)
    )
    return SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=consumer)))


def test_consumer_connected_reads_the_coordinator_connection() -> None:
    """Connected only with a known coordinator whose coordination connection is open; a missing attribute is False."""
    assert consumer_connected(_app(3, True)) is True
    assert consumer_connected(_app(3, False)) is False
    assert consumer_connected(_app(3, None)) is False
    assert consumer_connected(_app(None, True)) is False
    assert consumer_connected(SimpleNamespace(consumer=SimpleNamespace())) is False
