"""The two processing steps the worker runs, wired together: `IngestStep` (pipeline/ingest.py) and `DetectStep`
(pipeline/detect.py) against one sink, one metrics registry and one key cap, detect dead-lettering through
ingest. No logic of its own: every method hands over to a step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from datetime import timedelta
from typing import Any

from keywatch.core.engine import Engine, Outcome
from keywatch.metrics import Metrics
from keywatch.parsing import Rejection
from keywatch.pipeline.detect import DetectStep
from keywatch.pipeline.ingest import Accepted, IngestBatch, IngestStep, Rejected, Topics
from keywatch.pipeline.keycap import KeyCap
from keywatch.redact import Redactor
from keywatch.sinks.base import Sink


class Processor:
    """Runs ingest and detect against a sink and a state mapping."""

    def __init__(
        self,
        engine: Engine,
        sink: Sink,
        topics: Topics,
        *,
        max_record_bytes: int = 64 * 1024,
        max_future_skew: timedelta | None = timedelta(minutes=5),
        clock: Any = None,
        metrics: Metrics | None = None,
        redactor: Redactor | None = None,
        key_cap: KeyCap | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.ingest_step = IngestStep(
            sink,
            topics,
            max_record_bytes=max_record_bytes,
            max_future_skew=max_future_skew,
            clock=clock,
            metrics=self.metrics,
            redactor=redactor,
        )
        self.detect_step = DetectStep(engine, sink, self.ingest_step.dead_letter, metrics=self.metrics, key_cap=key_cap)

    @property
    def sink(self) -> Sink:
        """Where both steps send."""
        return self.ingest_step.sink

    def route(self, topic: str, key: bytes | None, value: bytes | None) -> Accepted | Rejected:
        """`IngestStep.route`."""
        return self.ingest_step.route(topic, key, value)

    async def ingest(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """`IngestStep.ingest`."""
        await self.ingest_step.ingest(topic, partition, offset, key, value)

    def pack_batch(
        self,
        records: Iterable[tuple[str, int, int, bytes | None, bytes | None]],
        partition_of: Callable[[bytes], int],
    ) -> IngestBatch:
        """`IngestStep.pack_batch`."""
        return self.ingest_step.pack_batch(records, partition_of)

    async def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        rejection: Rejection,
    ) -> None:
        """`IngestStep.dead_letter`."""
        await self.ingest_step.dead_letter(topic, partition, offset, key, value, rejection)

    async def detect(
        self, key: bytes, value: bytes, store: MutableMapping[bytes, bytes], partition: int | None = None
    ) -> Outcome | None:
        """`DetectStep.detect`."""
        return await self.detect_step.detect(key, value, store, partition)

    async def detect_message(
        self,
        key: bytes | None,
        value: bytes,
        store: MutableMapping[bytes, bytes],
        partition: int,
        offset: int = -1,
        topic: str = "keyed",
    ) -> int:
        """`DetectStep.detect_message`."""
        return await self.detect_step.detect_message(key, value, store, partition, offset, topic)
