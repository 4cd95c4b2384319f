"""Fixtures for tests against the real Kafka broker started by scripts/kafka-local (never a mock)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import ROOT, WorkerProcess


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The broker's bootstrap address: $KEYWATCH_TEST_BOOTSTRAP, or the local broker (started if it is down)."""
    given = os.environ.get("KEYWATCH_TEST_BOOTSTRAP")
    if given:
        return given
    script = ROOT / "scripts" / "kafka-local"
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)}
    started = subprocess.run([str(script), "start"], env=env, capture_output=True, text=True, timeout=600, check=False)
    if started.returncode != 0:
        pytest.fail(f"could not start the local Kafka broker:\n{started.stdout}\n{started.stderr}")
    for line in started.stdout.splitlines():
        if "KAFKA_BOOTSTRAP=" in line:
            return line.split("KAFKA_BOOTSTRAP=", 1)[1].split()[0]
    return f"127.0.0.1:{os.environ.get('KAFKA_PORT', '19092')}"


@pytest.fixture
async def worker_factory(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Callable[..., WorkerProcess]]:
    """Start `keywatch worker` processes with their own topics; all are stopped at the end of the test."""
    workers: list[WorkerProcess] = []

    def make(**kwargs: object) -> WorkerProcess:
        worker = WorkerProcess(bootstrap=kafka_bootstrap, workdir=tmp_path, **kwargs)  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs the broker."""
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.kafka)
