"""Talking to the real broker from tests: produce, collect with a deadline, run a worker process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[2]


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Send records in order with a plain aiokafka producer; return how many were acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for key, value in records]
        await producer.flush()
        for fut in futures:
            await fut
        return len(futures)
    finally:
        await producer.stop()


async def collect(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[tuple[bytes | None, bytes]]], bool],
    deadline_s: float = 60.0,
) -> list[tuple[bytes | None, bytes]]:
    """Read `topic` from the beginning until `until(messages)` holds or the deadline passes."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[tuple[bytes | None, bytes]] = []
    try:
        end = time.monotonic() + deadline_s
        while not until(got) and time.monotonic() < end:
            batch = await consumer.getmany(timeout_ms=250)
            for messages in batch.values():
                got.extend((m.key, m.value) for m in messages)
        return got
    finally:
        await consumer.stop()


@dataclass
class WorkerProcess:
    """A `keywatch worker` subprocess with its own group, topics and data directory."""

    bootstrap: str
    workdir: Path
    app_id: str = field(default_factory=lambda: f"kwtest-{uuid.uuid4().hex[:8]}")
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def topics(self) -> dict[str, str]:
        """This worker's topic names (unique per test so tests never see each other's records)."""
        return {
            "requests": f"{self.app_id}.requests",
            "lifecycle": f"{self.app_id}.lifecycle",
            "alerts": f"{self.app_id}.alerts",
            "dlq": f"{self.app_id}.dlq",
            "keyed": f"{self.app_id}-keyed",
        }

    @property
    def log_path(self) -> Path:
        """The worker's combined stdout/stderr."""
        return self.workdir / f"{self.app_id}.log"

    def env(self) -> dict[str, str]:
        """The environment the worker runs with."""
        t = self.topics
        return {
            **os.environ,
            "KEYWATCH_BOOTSTRAP_SERVERS": self.bootstrap,
            "KEYWATCH_APP_ID": self.app_id,
            "KEYWATCH_TOPIC_REQUESTS": t["requests"],
            "KEYWATCH_TOPIC_LIFECYCLE": t["lifecycle"],
            "KEYWATCH_TOPIC_ALERTS": t["alerts"],
            "KEYWATCH_TOPIC_DLQ": t["dlq"],
            "KEYWATCH_PARTITIONS": str(self.partitions),
            "KEYWATCH_DATA_DIR": str(self.workdir / f"{self.app_id}-data"),
            **self.extra_env,
        }

    def start(self) -> None:
        """Start the worker process (does not wait)."""
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "keywatch.cli.main", "worker"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )

    def log_text(self) -> str:
        """What the worker has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def wait_ready(self, deadline_s: float = 90.0) -> None:
        """Wait until faust says the worker is ready (partitions assigned, tables recovered)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if "[^Worker]: Ready" in self.log_text():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            await asyncio.sleep(0.2)
        raise AssertionError(f"worker not ready within {deadline_s}s:\n{self.log_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, deadline_s: float = 30.0) -> None:
        """Stop the worker: `sig`, then SIGKILL if it has not exited by the deadline."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(deadline_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
