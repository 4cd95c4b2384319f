"""Producing a scenario to Kafka (aiokafka): the only module of keywatch.sim that talks to a broker.

Records go out in event-time order, lifecycle and requests interleaved, keyed `<tenant>/<key_id>`. With
`realtime`, the scenario is shifted so that the end of its learning period is "now": the history is sent
as fast as allowed, then every later record is sent when the wall clock reaches its (re-timed) event time.
With `disorder_ms`, records go out up to that much out of event-time order (`generator.displace`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keywatch.sim.generator import TimeFormatter, iter_events
from keywatch.sim.scenario import Plan


@dataclass(slots=True)
class ProduceResult:
    """What was sent."""

    requests: int = 0
    lifecycle: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    last_event_ms: int | None = None


async def produce(
    plan: Plan,
    *,
    bootstrap: str,
    topic_requests: str,
    topic_lifecycle: str,
    rate: float | None = None,
    realtime: bool = False,
    lead: float | None = None,
    duration: float | None = None,
    progress: Callable[[ProduceResult], None] | None = None,
    producer_factory: Callable[..., Any] | None = None,
    disorder_ms: int = 0,
) -> ProduceResult:
    """Send the scenario; returns counts. Stops at the end, after `duration` seconds, or on SIGINT/SIGTERM."""
    if producer_factory is None:
        from aiokafka import AIOKafkaProducer

        producer_factory = AIOKafkaProducer
    producer = producer_factory(
        bootstrap_servers=[s.strip() for s in bootstrap.split(",")],
        linger_ms=20,
        max_batch_size=512 * 1024,
        acks=1,
    )
    result = ProduceResult()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not supported
            pass
    # Realtime: "now" is the end of the learning period, or `lead` seconds before the first incident (demo).
    anchor = plan.config.learning_end_ms
    if lead is not None and plan.incidents:
        anchor = min(i.start_ms for i in plan.incidents) - int(lead * 1000)
    shift = int(time.time() * 1000) - anchor if realtime else 0
    began = time.monotonic()
    last_report = began
    pending: list[asyncio.Future[Any]] = []
    await producer.start()
    try:
        for ts, kind, subject, value in iter_events(plan, shift, disorder_ms):
            if stop.is_set() or (duration is not None and time.monotonic() - began >= duration):
                result.interrupted = stop.is_set()
                break
            if realtime:
                wait = (ts - time.time() * 1000) / 1000.0
                if wait > 0:
                    if duration is not None:
                        wait = min(wait, max(0.0, duration - (time.monotonic() - began)))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=wait)
                    if stop.is_set() or (duration is not None and time.monotonic() - began >= duration):
                        result.interrupted = stop.is_set()
                        break
            topic = topic_requests if kind == "request" else topic_lifecycle
            pending.append(await producer.send(topic, value=value, key=subject.encode()))
            if kind == "request":
                result.requests += 1
            else:
                result.lifecycle += 1
            result.last_event_ms = ts
            sent = result.requests + result.lifecycle
            if rate:
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)  # surface delivery errors; bounds memory
                pending.clear()
            now = time.monotonic()
            if progress is not None and now - last_report >= 5.0:
                result.seconds = now - began
                progress(result)
                last_report = now
        await producer.flush()
        if pending:
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
    result.seconds = time.monotonic() - began
    return result


def stderr_progress(result: ProduceResult) -> None:
    """One progress line on stderr."""
    fmt = TimeFormatter()
    at = fmt(result.last_event_ms) if result.last_event_ms is not None else "-"
    sent = result.requests + result.lifecycle
    print(
        f"simulate: sent {sent:,} records ({result.requests:,} requests, {result.lifecycle:,} lifecycle) "
        f"in {result.seconds:.0f}s, event time {at}",
        file=sys.stderr,
    )
