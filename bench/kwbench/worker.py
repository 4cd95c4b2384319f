"""Running `keywatch worker` processes and reading their /metrics: the bench never sleeps to decide "done"."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kwbench.kafka import ROOT

PYTHON = str(ROOT / ".venv" / "bin" / "python")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)$")


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Scrape:
    """The samples of one /metrics scrape."""

    samples: dict[str, float]

    def sum(self, name: str, **labels: str) -> float:
        """Sum of every sample of `name` whose labels include `labels`."""
        total = 0.0
        want = [f'{k}="{v}"' for k, v in labels.items()]
        for key, value in self.samples.items():
            base, _, rest = key.partition("{")
            if base == name and all(w in rest for w in want):
                total += value
        return total

    @property
    def detected(self) -> int:
        """Input records the detect step has processed: its keyed records less the hand-offs among them
        (keywatch_handoffs_processed_total; a worker without it counts hand-offs as records, as the bench did
        before it, which ends the phase early), or keyed messages for a worker older than the batching change."""
        if any(k.startswith("keywatch_processed_records_total") for k in self.samples):
            handoffs = self.sum("keywatch_handoffs_processed_total")
            return int(self.sum("keywatch_processed_records_total", step="detect") - handoffs)
        return int(self.sum("keywatch_processing_seconds_count", step="detect"))

    @property
    def ingested(self) -> int:
        """Input records the ingest step has accepted or rejected."""
        return int(self.sum("keywatch_records_total"))


@dataclass
class Worker:
    """One `python -m keywatch.cli.main worker` process with its own metrics port and data directory."""

    bootstrap: str
    app_id: str
    requests_topic: str
    workdir: Path
    partitions: int = 4
    name: str = "w"
    wrap: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def topics(self) -> dict[str, str]:
        """Its topics: the shared input, its own lifecycle/alerts/dlq and keyed topic."""
        return {
            "requests": self.requests_topic,
            "lifecycle": f"{self.app_id}.lifecycle",
            "alerts": f"{self.app_id}.alerts",
            "dlq": f"{self.app_id}.dlq",
            "keyed": f"{self.app_id}-keyed",
        }

    @property
    def log_path(self) -> Path:
        """Combined stdout/stderr of the worker."""
        return self.workdir / f"{self.app_id}-{self.name}.log"

    def start(self) -> None:
        """Spawn the worker (returns at once)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        t = self.topics
        env = {
            **os.environ,
            "KEYWATCH_BOOTSTRAP_SERVERS": self.bootstrap,
            "KEYWATCH_APP_ID": self.app_id,
            "KEYWATCH_TOPIC_REQUESTS": t["requests"],
            "KEYWATCH_TOPIC_LIFECYCLE": t["lifecycle"],
            "KEYWATCH_TOPIC_ALERTS": t["alerts"],
            "KEYWATCH_TOPIC_DLQ": t["dlq"],
            "KEYWATCH_PARTITIONS": str(self.partitions),
            "KEYWATCH_METRICS_PORT": str(self.port),
            "KEYWATCH_DATA_DIR": str(self.workdir / f"{self.app_id}-{self.name}-data"),
            "KEYWATCH_REDACTION_KEY": "bench-redaction-key-0123456789",
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.wrap, PYTHON, "-m", "keywatch.cli.main", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )

    def scrape(self) -> Scrape | None:
        """One /metrics scrape, or None while the endpoint is not up."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and (m := _SAMPLE.match(line)):
                samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return Scrape(samples)

    def ready(self) -> bool:
        """/readyz says connected, assigned and recovered."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def check_alive(self) -> None:
        """Raise with the log tail if the worker died."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker {self.app_id}/{self.name} exited with {self.proc.returncode}:\n{tail}")

    def wait_ready(self, deadline_s: float = 120.0) -> float:
        """Wait for /readyz; return when it said so (perf_counter)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            self.check_alive()
            if self.ready():
                return time.perf_counter()
            time.sleep(0.2)
        raise RuntimeError(f"worker {self.app_id} not ready after {deadline_s}s; see {self.log_path}")

    @property
    def pid(self) -> int:
        """The python process's pid (the worker itself, not a wrapper)."""
        assert self.proc is not None
        return self.proc.pid

    def rss_bytes(self) -> int:
        """VmRSS of the worker process."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class Progress:
    """When processing started, crossed a mark and finished (perf_counter seconds)."""

    spawned: float
    ready: float
    first: float
    marks: dict[int, float]
    done: float
    last: Scrape


def wait_processed(
    workers: list[Worker], target: int, *, spawned: float, marks: tuple[int, ...] = (), poll_s: float = 0.25
) -> Progress:
    """Poll /metrics of every worker until their detect counts add up to `target`."""
    ready = first = 0.0
    crossed: dict[int, float] = {}
    stalled_since, last_count = time.monotonic(), -1
    while True:
        for w in workers:
            w.check_alive()
        scrapes = [w.scrape() for w in workers]
        now = time.perf_counter()
        count = sum(s.detected for s in scrapes if s is not None)
        if not ready and all(s is not None for s in scrapes) and all(w.ready() for w in workers):
            ready = now
        if not first and count > 0:
            first = now
        for mark in marks:
            if mark not in crossed and count >= mark:
                crossed[mark] = now
        if count >= target:
            last = scrapes[0]
            assert last is not None
            return Progress(spawned, ready or first, first, crossed, now, last)
        if count != last_count:
            stalled_since, last_count = time.monotonic(), count
        elif time.monotonic() - stalled_since > 180:
            raise RuntimeError(f"no progress for 180 s at {count}/{target} records; see {workers[0].log_path}")
        time.sleep(poll_s)
