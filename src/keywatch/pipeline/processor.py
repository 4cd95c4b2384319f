"""The two processing steps the worker runs, wired together: `IngestStep` (pipeline/ingest.py) and `DetectStep`
(pipeline/detect.py) against one sink, one metrics registry and one key cap, detect dead-lettering through
ingest. No logic of its own: its methods are the steps' own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from keywatch.core.engine import Engine
from keywatch.metrics import Metrics
from keywatch.pipeline.detect import DetectStep
from keywatch.pipeline.ingest import IngestStep, Topics
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
        self.sink = sink
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
        self.route = self.ingest_step.route
        self.ingest = self.ingest_step.ingest
        self.pack_batch = self.ingest_step.pack_batch
        self.dead_letter = self.ingest_step.dead_letter
        self.detect = self.detect_step.detect
        self.detect_message = self.detect_step.detect_message
