"""Talking to the real broker from tests: produce, collect with a deadline, run a worker process, run a broker
of a test's own; and a phased input for the fault tests with what a clean run of it must emit.

The phased input: keys learn their networks for 26 hours of event time (the IP detector learns for 24 h and 50
requests), some are revoked, then requests come from the known ranges (no alert), from new ranges (one
usedFromNewIp each) and for the revoked keys (usedAfterRevoke). An alert after a fault that a clean run does not
emit means state was lost; a missing one means records were lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.kafka_admin import ensure_topics
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.processor import Processor
from keywatch.pipeline.wire import record_tags
from keywatch.redact import Redactor
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink
from tests.factories import as_bytes, lifecycle_dict, request_dict

ROOT = Path(__file__).resolve().parents[2]


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    security: Mapping[str, Any] | None = None,
) -> int:
    """Send records in order with a plain aiokafka producer; return how many were acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **(security or {}))
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
    security: Mapping[str, Any] | None = None,
) -> list[tuple[bytes | None, bytes]]:
    """Read `topic` from the beginning until `until(messages)` holds or the deadline passes."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **(security or {}),
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


async def read_all(
    bootstrap: str,
    topic: str,
    *,
    partition: int | None = None,
    deadline_s: float = 60.0,
    security: Mapping[str, Any] | None = None,
) -> list[tuple[bytes | None, bytes | None]]:
    """Every message of `topic` (of its `partition` only, if given) up to its end offsets now (tombstones
    included, as value None)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **(security or {}),
    )
    await consumer.start()
    got: list[tuple[bytes | None, bytes | None]] = []
    try:
        partitions = [tp for tp in await _partitions(consumer, topic) if partition in (None, tp.partition)]
        if not partitions:
            return got
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        end = time.monotonic() + deadline_s
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > end:
                raise AssertionError(f"could not read {topic} to its end within {deadline_s}s")
            batch = await consumer.getmany(timeout_ms=250)
            for messages in batch.values():
                got.extend((m.key, m.value) for m in messages)
        return got
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    cluster = await consumer._client.fetch_all_metadata()  # fresh metadata, not the consumer's cache
    return sorted(TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or [])


def keyed_tags(messages: Iterable[tuple[bytes | None, bytes | None]]) -> list[bytes]:
    """The tag of every record on the keyed topic: packed messages (ingest) carry many, forwards one each."""
    return [tag for _, value in messages if value for tag in record_tags(value)]


def table_contents(changelog: list[tuple[bytes | None, bytes | None]]) -> dict[bytes, bytes]:
    """A table as its changelog describes it: last value per key, tombstones deleting."""
    table: dict[bytes, bytes] = {}
    for key, value in changelog:
        assert key is not None
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


async def wait_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], *, deadline_s: float, what: str, poll_s: float = 0.2
) -> None:
    """Poll `check` (plain or async) until it is true; fail naming `what` after `deadline_s` seconds."""
    end = time.monotonic() + deadline_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        await asyncio.sleep(poll_s)


# Below Linux's ephemeral range (32768-60999): a port the kernel hands to client sockets (what binding port 0
# returns) can be taken by an outgoing connection before a broker started on it binds it.
TEST_PORTS = (20000, 32000)


def port_range() -> tuple[int, int]:
    """The ports tests pick from: $KEYWATCH_TEST_PORTS ("low-high", e.g. for machines shared by several runs), else
    TEST_PORTS."""
    given = os.environ.get("KEYWATCH_TEST_PORTS")
    if not given:
        return TEST_PORTS
    low, sep, high = given.partition("-")
    if not (sep and low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) < 32768):
        raise ValueError(f"KEYWATCH_TEST_PORTS must be low-high within 1024-32767, got {given!r}")
    return int(low), int(high)


def free_port(consecutive: int = 1) -> int:
    """A TCP port on 127.0.0.1 in `port_range()` that is free now (and the next `consecutive - 1` ports too)."""
    low, high = port_range()
    if high - low + 1 < consecutive:
        raise ValueError(f"ports {low}-{high} hold fewer than {consecutive} consecutive ports")
    for _ in range(200):
        port = low + secrets.randbelow(high - low - consecutive + 2)
        if all(_port_free(port + i) for i in range(consecutive)):
            return port
    raise RuntimeError(f"no {consecutive} free consecutive ports found in {low}-{high}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, Any]:
    """GET http://127.0.0.1:<port><path>: (status, parsed JSON or text); (0, error) if nothing answers."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def kafka_local(
    home: Path, args: list[str], env: Mapping[str, str], timeout_s: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """Run scripts/kafka-local with KAFKA_HOME `home` (its jars linked from the main broker's, so no Maven run)."""
    shared = Path(os.environ.get("KAFKA_HOME_SHARED", ROOT / ".kafka")) / "libs"
    libs = home / "libs"
    if shared.is_dir() and not libs.exists():
        home.mkdir(parents=True, exist_ok=True)
        libs.symlink_to(shared)
    return subprocess.run(
        [str(ROOT / "scripts" / "kafka-local"), *args],
        env={**os.environ, "KAFKA_HOME": str(home), "KAFKA_HEAP": "384m", "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@dataclass
class PrivateBroker:
    """A broker of its own (scripts/kafka-local with its own KAFKA_HOME and ports) that a test may stop.

    The jars are shared with the main broker's KAFKA_HOME when it has them, so no Maven run is needed.
    """

    home: Path
    port: int = field(default_factory=lambda: free_port(consecutive=2))
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        """Its PLAINTEXT bootstrap address."""
        return f"127.0.0.1:{self.port}"

    def _run(self, command: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
        env = {"KAFKA_PORT": str(self.port), "KAFKA_CONTROLLER_PORT": str(self.port + 1), **self.extra_env}
        return kafka_local(self.home, [command], env, timeout_s)

    def start(self) -> None:
        """Start it and wait until it answers metadata requests."""
        done = self._run("start")
        if done.returncode != 0:
            raise AssertionError(f"private broker did not start:\n{done.stdout}\n{done.stderr}")

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after the script's timeout)."""
        done = self._run("stop")
        if done.returncode != 0:
            raise AssertionError(f"private broker did not stop:\n{done.stdout}\n{done.stderr}")

    def cleanup(self) -> None:
        """Stop it and delete its data."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@dataclass
class KafkaCluster:
    """A cluster of a test's own (scripts/kafka-local --nodes N: every node broker+controller, its own ports and
    data under `home`) whose nodes a test may SIGKILL and start again. Node n is broker id n."""

    home: Path
    nodes: int = 3
    port: int = 0  # node 1's client port; node n uses port + 2(n-1) and the controller port above it; 0 = pick

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(consecutive=2 * self.nodes)

    def node_bootstrap(self, node: int) -> str:
        """The PLAINTEXT address of node `node` (1..nodes)."""
        return f"127.0.0.1:{self.port + 2 * (node - 1)}"

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma separated."""
        return ",".join(self.node_bootstrap(n) for n in range(1, self.nodes + 1))

    def _run(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        # three JVMs starting at once on a small CI machine: more than the single broker's 90 s may be needed
        env = {"KAFKA_NODES": str(self.nodes), "KAFKA_PORT": str(self.port), "KAFKA_START_TIMEOUT": "240"}
        return kafka_local(self.home, list(args), env, timeout_s)

    def _check(self, *args: str) -> str:
        done = self._run(*args)
        if done.returncode != 0:
            raise AssertionError(f"kafka-local {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self, node: int | None = None) -> None:
        """Start every node (or one) and wait until each answers with every running node in its metadata."""
        self._check("start", *([str(node)] if node else []))

    def pid(self, node: int) -> int:
        """The process id of node `node`'s JVM."""
        return int(self._check("pid", str(node)))

    def kill(self, node: int) -> None:
        """SIGKILL node `node` (no controlled shutdown) and wait until its process is gone."""
        self._check("kill", str(node))

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after the script's timeout)."""
        self._check("stop")

    def cleanup(self) -> None:
        """Stop every node and delete their data."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@dataclass
class WorkerProcess:
    """A `keywatch worker` subprocess with its own group, topics and data directory.

    Several workers of one group share `app_id` and differ by `name` (their log file and data directory).
    """

    bootstrap: str
    workdir: Path
    app_id: str = field(default_factory=lambda: f"kwtest-{uuid.uuid4().hex[:8]}")
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    name: str | None = None
    metrics_port: int | None = None  # None or 0: no HTTP endpoints (never the default 9464 another process may hold)
    create_inputs: bool = True  # keywatch never creates its input topics: the test does, as producers would
    client_security: dict[str, Any] | None = None  # aiokafka arguments of the test's own clients (topic creation)
    _log_start: int = field(default=0, init=False, repr=False)

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
        return self.workdir / f"{self.name or self.app_id}.log"

    @property
    def data_dir(self) -> Path:
        """The worker's local state directory (kept across restarts)."""
        return self.workdir / f"{self.name or self.app_id}-data"

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
            "KEYWATCH_DATA_DIR": str(self.data_dir),
            "KEYWATCH_METRICS_PORT": str(self.metrics_port or 0),
            **self.extra_env,
        }

    def create_input_topics(self, deadline_s: float = 60.0) -> None:
        """Create this worker's input topics (if missing) and wait until every partition has a leader."""
        names = [self.topics["requests"], self.topics["lifecycle"]]
        # start() is called from async tests and from plain code alike: a loop of its own, in a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(
                asyncio.run,
                ensure_topics(
                    self.bootstrap.split(","),
                    names,
                    self.partitions,
                    security=self.client_security,
                    visible_within_s=deadline_s,
                ),
            ).result(timeout=deadline_s + 30)

    def start(self) -> None:
        """Create the input topics (unless `create_inputs` is off), then start the worker process (does not
        wait for it)."""
        if self.create_inputs:
            self.create_input_topics()
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
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

    def log_since_start(self) -> str:
        """What the worker has logged since its latest start."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(self._log_start)
            return fh.read().decode(errors="replace")

    async def wait_log(self, text: str, deadline_s: float = 60.0) -> None:
        """Wait until `text` appears in the log since the latest start."""
        await wait_until(lambda: text in self.log_since_start(), deadline_s=deadline_s, what=f"{text!r} in the log")

    def kill(self) -> None:
        """SIGKILL the worker: no shutdown, no final commit, no leaving the group."""
        self.stop(signal.SIGKILL)

    def http(self, path: str) -> tuple[int, Any]:
        """GET one of the worker's endpoints."""
        assert self.metrics_port, "start the worker with a metrics_port"
        return http_get(self.metrics_port, path)

    async def wait_ready(self, deadline_s: float = 90.0) -> None:
        """Wait until faust says the worker is ready (partitions assigned, tables recovered)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if "[^Worker]: Ready" in self.log_since_start():
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


# -- the phased input of the fault tests ---------------------------------------------------------------

Record = tuple[bytes | None, bytes | None]
HISTORY_REQUESTS = 60  # > learning_requests (50), spread over 26 h > learning_seconds (24 h)


@dataclass
class Phase:
    """Records for one step: lifecycle events and requests, each keyed by subject."""

    name: str
    lifecycle: list[Record] = field(default_factory=list)
    requests: list[Record] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lifecycle) + len(self.requests)


def _home_ip(i: int, j: int) -> str:
    return f"10.{i % 250}.{1 + j % 2}.{1 + j % 200}"


def build(keys: int, *, tenant: str = "acme", revoke_every: int = 4, start: datetime | None = None) -> list[Phase]:
    """The phases: created, history, revoked, during (the fault happens here), after; from `start` (by default
    four days before the current hour)."""
    t0 = start or datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=4)

    def ts(delta: timedelta) -> str:
        return (t0 + delta).isoformat().replace("+00:00", "Z")

    def subject(i: int) -> bytes:
        return f"{tenant}/fk_{i}".encode()

    created, history, revoked, during, after = (Phase(n) for n in ("created", "history", "revoked", "during", "after"))
    for i in range(keys):
        kid = f"fk_{i}"
        created.lifecycle.append((subject(i), as_bytes(lifecycle_dict(tenant=tenant, key_id=kid, ts=ts(timedelta())))))
        for j in range(HISTORY_REQUESTS):
            at = timedelta(minutes=1 + j * 26)
            rec = request_dict(tenant=tenant, key_id=kid, ip=_home_ip(i, j), ts=ts(at), request_id=f"h{i}-{j}")
            history.requests.append((subject(i), as_bytes(rec)))
        if i % revoke_every == 0:
            event = lifecycle_dict(
                type="apiKey.revoked", tenant=tenant, key_id=kid, ts=ts(timedelta(hours=26, minutes=30))
            )
            revoked.lifecycle.append((subject(i), as_bytes(event)))
        for j in range(10):
            at = timedelta(hours=27, minutes=j * 7)
            ip = f"172.16.{i % 250}.9" if j == 5 else _home_ip(i, j)
            rec = request_dict(tenant=tenant, key_id=kid, ip=ip, ts=ts(at), request_id=f"d{i}-{j}")
            during.requests.append((subject(i), as_bytes(rec)))
        for j in range(6):
            at = timedelta(hours=30, minutes=j * 11)
            ip = f"172.17.{i % 250}.9" if j == 3 else _home_ip(i, j)
            rec = request_dict(tenant=tenant, key_id=kid, ip=ip, ts=ts(at), request_id=f"a{i}-{j}")
            after.requests.append((subject(i), as_bytes(rec)))
    return [created, history, revoked, during, after]


def home_ranges(keys: int) -> set[tuple[str, str]]:
    """(key_id, range) of every range a key learned in its history."""
    return {(f"fk_{i}", f"10.{i % 250}.{n}.0/24") for i in range(keys) for n in (1, 2)}


async def expected_alerts(phases: list[Phase], settings: Settings | None = None) -> dict[str, Alert]:
    """The alerts a clean run emits: the worker's own Processor over the phases in order, state in a dict."""
    settings = settings or Settings()
    sink = MemorySink()
    processor = Processor(make_engine(settings), sink, Topics("requests", "lifecycle"), redactor=Redactor(b"k" * 16))
    store: dict[bytes, bytes] = {}
    for phase in phases:
        for topic, records in (("lifecycle", phase.lifecycle), ("requests", phase.requests)):
            for offset, (key, value) in enumerate(records):
                await processor.ingest(topic, 0, offset, key, value)
        while sink.messages["keyed"]:
            key, value = sink.messages["keyed"].pop(0)
            assert key is not None
            await processor.detect(key, value, store)
    return {a.id: a for a in (Alert.model_validate_json(v) for _, v in sink.messages["alerts"])}


async def feed(worker: WorkerProcess, phases: list[Phase], *, deadline_s: float = 90.0) -> None:
    """Produce the phases in order, each once the previous one is on the keyed topic (so a key's lifecycle
    events and requests, which come from two topics, reach its partition in the order of the phases)."""
    t = worker.topics
    for phase in phases:
        before = len(keyed_tags(await read_all(worker.bootstrap, t["keyed"])))
        if phase.lifecycle:
            await produce(worker.bootstrap, t["lifecycle"], phase.lifecycle)
        if phase.requests:
            await produce(worker.bootstrap, t["requests"], phase.requests)
        want = before + len(phase)
        got = keyed_tags(
            await collect(
                worker.bootstrap, t["keyed"], until=lambda m, w=want: len(keyed_tags(m)) >= w, deadline_s=deadline_s
            )
        )
        assert len(got) >= want, f"phase {phase.name}: {len(got)}/{want} on keyed\n{worker.log_text()[-3000:]}"


async def alerts_of(
    worker: WorkerProcess, until: Callable[[list[Alert]], bool], deadline_s: float = 90.0
) -> list[Alert]:
    """Every alert on the worker's alert topic, read until `until(alerts)` holds or the deadline passes."""
    raw = await collect(
        worker.bootstrap,
        worker.topics["alerts"],
        until=lambda m: until([Alert.model_validate_json(v) for _, v in m]),
        deadline_s=deadline_s,
    )
    return [Alert.model_validate_json(v) for _, v in raw]


async def _wait_group_offsets(
    bootstrap: str, group: str, topic: str, done: Callable[[int | None, int], bool], what: str, deadline_s: float
) -> None:
    """Wait until `done(committed offset or None, end offset)` holds for every partition of `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic)

        async def all_done() -> bool:
            ends = await consumer.end_offsets(parts)
            committed = await admin.list_consumer_group_offsets(group, partitions=parts)
            return all(done(committed[tp].offset if committed.get(tp) else None, ends[tp]) for tp in parts)

        await wait_until(all_done, deadline_s=deadline_s, what=f"group {group} to {what} {topic}", poll_s=0.5)
    finally:
        await consumer.stop()
        await admin.close()


async def wait_caught_up(bootstrap: str, group: str, topic: str, deadline_s: float = 60.0) -> None:
    """Wait until the group's committed offsets on `topic` reach its end: every record there is processed."""
    await _wait_group_offsets(
        bootstrap,
        group,
        topic,
        lambda committed, end: end == 0 or (committed is not None and committed >= end),
        "commit the end of",
        deadline_s,
    )


async def wait_committed(bootstrap: str, group: str, topic: str, deadline_s: float = 60.0) -> None:
    """Wait until the group has committed something on every partition of `topic` that has records."""
    await _wait_group_offsets(
        bootstrap,
        group,
        topic,
        lambda committed, end: end == 0 or (committed is not None and committed > 0),
        "commit on every partition of",
        deadline_s,
    )


def summary(alerts: list[Alert]) -> dict[str, int]:
    """Alert counts by type (for assertion messages)."""
    out: dict[str, int] = {}
    for a in alerts:
        out[a.type] = out.get(a.type, 0) + 1
    return out


def same_alert(a: Alert, b: Alert) -> bool:
    """Two emissions of one alert: same id, and the same trigger."""
    return (a.id, a.type, a.subject, a.time) == (b.id, b.type, b.subject, b.time)


async def feed_in_order(worker: WorkerProcess, records: Iterable[tuple[str, bytes | None, bytes]]) -> None:
    """Produce (input, key, value) records (input: "requests" or "lifecycle") to the worker's input topics in
    exactly this order across both topics: consecutive records of one input are one run, and each run is on the
    keyed topic before the next is produced (two topics are otherwise read in whatever order they race)."""
    runs: list[tuple[str, list[tuple[bytes | None, bytes]]]] = []
    for topic, key, value in records:
        if not runs or runs[-1][0] != topic:
            runs.append((topic, []))
        runs[-1][1].append((key, value))
    ingested = 0
    for topic, run in runs:
        await produce(worker.bootstrap, worker.topics[topic], run)
        ingested += len(run)
        keyed = await collect(
            worker.bootstrap,
            worker.topics["keyed"],
            until=lambda m, n=ingested: sum(t in (b"R", b"L") for t in keyed_tags(m)) >= n,
        )
        assert sum(t in (b"R", b"L") for t in keyed_tags(keyed)) >= ingested, worker.log_text()[-3000:]
