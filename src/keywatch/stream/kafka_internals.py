"""Every use of a faust or aiokafka private attribute, in one place.

Each function is self-contained, says why the public API is not enough, and names the versions it was checked
against (faust-streaming 0.15.3, aiokafka 0.14.0: both pinned exactly). `tests/unit/test_kafka_internals.py`
fails loudly when an upgrade removes an attribute used here.
"""

from __future__ import annotations

from typing import Any


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
