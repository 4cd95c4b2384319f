"""Small Kafka chores outside faust: wait for the broker, make sure keywatch's topics exist."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


async def wait_for_broker(bootstrap: list[str], deadline_s: float = 60.0) -> None:
    """Retry with backoff until the cluster answers a metadata request; raise after `deadline_s` seconds."""
    deadline = time.monotonic() + deadline_s
    delay = 0.5
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"Kafka at {','.join(bootstrap)} did not answer within {deadline_s:.0f}s ({exc})"
                ) from exc
            log.warning("Kafka at %s not reachable yet (%s); retrying in %.1fs", ",".join(bootstrap), exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        finally:
            await admin.close()


async def ensure_topics(bootstrap: list[str], names: list[str], partitions: int, replication: int = 1) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker may win the race
                await admin.create_topics(
                    [NewTopic(name=n, num_partitions=partitions, replication_factor=replication) for n in missing]
                )
            log.info("created topics %s with %d partitions", ", ".join(missing), partitions)
        return missing
    finally:
        await admin.close()
