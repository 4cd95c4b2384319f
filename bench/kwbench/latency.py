"""Alert latency: produce time -> alert visible to a consumer, at a steady request rate.

Probes are requests on keys revoked two hours earlier (event time): each is the first use of its key past the
60 s grace period, so apiKey.usedAfterRevoke fires on that very record (one distinct key per probe, since the
alert is suppressed per key for an hour). Probes are spread evenly through normal background traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from kwbench.data import background_templates, iso_ms, probe_request, revoked_event
from kwbench.worker import Worker

TENANT = "lat"


@dataclass
class LatencyResult:
    """What the latency phase saw."""

    rate_target: int
    rate_achieved: float
    seconds: float
    probes: int
    received: int
    p50_s: float | None
    p99_s: float | None
    max_s: float | None
    backlog_at_end: int


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _wait_detected(worker: Worker, target: int, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        scrape = await asyncio.to_thread(worker.scrape)
        if scrape is not None and scrape.detected >= target:
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"worker did not process {target} lifecycle events in {deadline_s}s")


async def measure(
    bootstrap: str,
    worker: Worker,
    *,
    partitions: int,
    seconds: float,
    rate: int,
    probes_per_s: int,
    warmup_s: float,
    run_id: str,
) -> LatencyResult:
    """Run the paced load against a ready worker; return percentiles over probes after the warm-up."""
    topics = worker.topics
    probes = int(seconds * probes_per_s)
    key_ids = [f"key_live_rev{run_id}{n:05d}" for n in range(probes)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    await producer.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        base = await _detected(worker)
        revoked_at = int(time.time() * 1000) - 2 * 3600 * 1000
        for key_id in key_ids:
            await producer.send(
                topics["lifecycle"], key=f"{TENANT}/{key_id}".encode(), value=revoked_event(TENANT, key_id, revoked_at)
            )
        await producer.flush()
        await _wait_detected(worker, base + probes, deadline_s=120)

        parts = [TopicPartition(topics["alerts"], p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:  # resolve the end offsets now, so nothing produced from here on is skipped
            await consumer.position(tp)
        seen: dict[str, float] = {}
        sent_at: dict[str, float] = {}
        stop, produced, all_seen = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def read_alerts() -> None:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=50)
                now = time.perf_counter()
                for messages in batch.values():
                    for m in messages:
                        alert = orjson.loads(m.value)
                        if alert.get("type") == "apiKey.usedAfterRevoke":
                            seen.setdefault(alert["data"]["key_id"], now)
                if produced.is_set() and len(seen) >= len(sent_at):
                    all_seen.set()

        reader = asyncio.create_task(read_alerts())
        background = background_templates(10_000)
        every = max(1, rate // probes_per_s)
        started = time.perf_counter()
        sent = probe_no = bg = 0
        while True:
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                break
            due = min(int(rate * elapsed) + 1, int(rate * seconds)) - sent
            if due > 0:
                wall_ms = int(time.time() * 1000)
                ts = iso_ms(wall_ms).encode()
                for _ in range(due):
                    if sent % every == 0 and probe_no < probes:
                        key_id = key_ids[probe_no]
                        probe_no += 1
                        sent_at[key_id] = time.perf_counter()
                        await producer.send(
                            topics["requests"],
                            key=f"{TENANT}/{key_id}".encode(),
                            value=probe_request(TENANT, key_id, wall_ms),
                        )
                    else:
                        key, prefix, suffix = background[bg % len(background)]
                        bg += 1
                        await producer.send(topics["requests"], key=key, value=prefix + ts + suffix)
                    sent += 1
            await asyncio.sleep(0.005)
        produced_s = time.perf_counter() - started
        await producer.flush()
        produced.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), 60)
        stop.set()
        await reader
        backlog = max(0, base + probes + sent - await _detected(worker))
        counted = [k for k, at in sent_at.items() if at - started >= warmup_s]
        latencies = [seen[k] - sent_at[k] for k in counted if k in seen]
        missing = len(counted) - len(latencies)
        # A probe whose alert never came within the wait counts as slower than every one that came.
        latencies += [float("inf")] * missing
        return LatencyResult(
            rate_target=rate,
            rate_achieved=sent / produced_s,
            seconds=produced_s,
            probes=len(counted),
            received=len(counted) - missing,
            p50_s=_pct(latencies, 0.50),
            p99_s=_pct(latencies, 0.99),
            max_s=max(latencies) if latencies else None,
            backlog_at_end=backlog,
        )
    finally:
        await consumer.stop()
        await producer.stop()


async def _detected(worker: Worker) -> int:
    scrape = await asyncio.to_thread(worker.scrape)
    return scrape.detected if scrape is not None else 0
