"""Offline replay: the worker's engine over JSONL inputs, sorted by event time.

The same `Engine` the worker runs, with state in a dict and forwards applied at once, so a backtest on last
month's logs gives the alerts (and alert ids) the worker would have given. Inputs may come in any order, split
over several files: every valid record is sorted by event time first (`keywatch.eventsort`, in bounded memory),
so the alerts depend on the records only, never on how they were ordered or split.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import multiprocessing
import queue
import tempfile
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.engine import Engine, Forward, Outcome
from keywatch.core.state import KeyState
from keywatch.eventsort import DEFAULT_SORT_BUFFER, Entry, entry, sorted_entries
from keywatch.inputs import InputError, read_lines
from keywatch.parsing import Rejection, decode

# At equal event times, lifecycle events go first: a key created at t is known to a request at t.
LIFECYCLE, REQUESTS = 0, 1


@dataclass
class ReplaySummary:
    """What a replay read, rejected and emitted."""

    requests: int = 0
    lifecycle: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_examples: list[str] = field(default_factory=list)
    alerts: Counter[str] = field(default_factory=Counter)
    keys: int = 0
    seconds: float = 0.0
    # Records earlier than a record before them in the same input, and by how much at most (replay sorts them).
    out_of_order: int = 0
    max_disorder_ms: int = 0
    runs: int = 1
    allowed_lateness_ms: int = 300_000
    # Valid records to replay: known once the input is sorted, before the first is replayed (for progress).
    expected: int = 0

    @property
    def records(self) -> int:
        """Valid records processed."""
        return self.requests + self.lifecycle

    def lines(self) -> list[str]:
        """A human summary."""
        rate = (self.records + sum(self.rejected.values())) / self.seconds if self.seconds else 0.0
        out = [
            f"replayed {self.requests} requests and {self.lifecycle} lifecycle events for {self.keys} keys "
            f"in {self.seconds:.1f}s ({rate:,.0f} records/s)",
            f"alerts: {sum(self.alerts.values())}" + "".join(f"\n  {t}: {n}" for t, n in sorted(self.alerts.items())),
        ]
        if self.out_of_order:
            out.append(
                f"input not in event-time order: {self.out_of_order} records earlier than a record before them in "
                f"their input (by up to {self.max_disorder_ms / 1000:.3f}s); sorted by event time "
                f"({self.runs} run{'s' if self.runs != 1 else ''})"
            )
            if self.max_disorder_ms > self.allowed_lateness_ms:
                out.append(
                    f"warning: records more than the allowed lateness ({self.allowed_lateness_ms / 1000:.0f}s) "
                    "out of order: the worker, fed in this order, may not give these alerts (docs/alerts.md)"
                )
        if self.rejected:
            out.append(
                f"malformed lines skipped: {sum(self.rejected.values())} "
                + ", ".join(f"{code}={n}" for code, n in sorted(self.rejected.items()))
            )
            out.extend(f"  {example}" for example in self.rejected_examples)
        return out


@dataclass(frozen=True, slots=True)
class Input:
    """One input of a replay: request records or lifecycle events, as lines, named `label` in messages."""

    kind: int
    label: str
    lines: Iterable[bytes]

    @classmethod
    def requests(cls, label: str, lines: Iterable[bytes]) -> Input:
        """Request log records."""
        return cls(REQUESTS, label, lines)

    @classmethod
    def lifecycle(cls, label: str, lines: Iterable[bytes]) -> Input:
        """Lifecycle events."""
        return cls(LIFECYCLE, label, lines)


def _model(kind: int) -> type[RequestRecord] | type[LifecycleEvent]:
    return RequestRecord if kind == REQUESTS else LifecycleEvent


def _entries(inputs: Sequence[Input], summary: ReplaySummary) -> Iterator[Entry]:
    """The sort entries of every valid line; bad lines are counted; disorder within an input is measured."""
    for source in inputs:
        model = _model(source.kind)
        newest: int | None = None
        for lineno, line in enumerate(source.lines, 1):
            stripped = line.strip()
            if not stripped:
                continue
            result = decode(stripped, model)
            if isinstance(result, Rejection):
                summary.rejected[result.code] += 1
                if len(summary.rejected_examples) < 5:
                    summary.rejected_examples.append(f"{source.label}:{lineno}: {result.reason}")
                continue
            when = int(result.ts.timestamp() * 1000)
            if newest is None or when >= newest:
                newest = when
            else:
                summary.out_of_order += 1
                summary.max_disorder_ms = max(summary.max_disorder_ms, newest - when)
            yield entry(when, source.kind, stripped)


def replay(
    requests: Iterable[bytes],
    lifecycle: Iterable[bytes],
    engine: Engine,
    emit: Callable[[Alert], None],
    *,
    progress: Callable[[ReplaySummary], None] | None = None,
    progress_every: float = 2.0,
    labels: tuple[str, str] = ("requests", "lifecycle"),
    sort_buffer: int = DEFAULT_SORT_BUFFER,
) -> ReplaySummary:
    """Run `engine` over both inputs in event-time order; call `emit` for every alert."""
    inputs = [Input.requests(labels[0], requests), Input.lifecycle(labels[1], lifecycle)]
    return replay_inputs(
        inputs, engine, emit, progress=progress, progress_every=progress_every, sort_buffer=sort_buffer
    )


def replay_inputs(
    inputs: Sequence[Input],
    engine: Engine,
    emit: Callable[[Alert], None],
    *,
    progress: Callable[[ReplaySummary], None] | None = None,
    progress_every: float = 2.0,
    sort_buffer: int = DEFAULT_SORT_BUFFER,
) -> ReplaySummary:
    """Run `engine` over every record of `inputs` in event-time order, whatever order they were read in (at most
    `sort_buffer` lines held in memory, the rest in sorted temporary runs); call `emit` for every alert."""
    with _fewer_collections():
        return _replay(inputs, engine, emit, progress, progress_every, sort_buffer)


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Replay allocates a few containers per record and keeps one state per key: with the default thresholds the
    cyclic collector ran so often that it took ~10 % of the time at 100,000 keys (20.7 -> 18.3 s measured)."""
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)


class _Counting:
    """Counts the entries that pass, to know how many sorted runs they made."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self.entries, self.count = entries, 0

    def __iter__(self) -> Iterator[Entry]:
        for item in self.entries:
            self.count += 1
            yield item


def _replay(
    inputs: Sequence[Input],
    engine: Engine,
    emit: Callable[[Alert], None],
    progress: Callable[[ReplaySummary], None] | None,
    progress_every: float,
    sort_buffer: int,
) -> ReplaySummary:
    summary = ReplaySummary(allowed_lateness_ms=engine.allowed_lateness_ms)
    states: dict[str, KeyState] = {}
    started = last = time.monotonic()
    pending: deque[Forward] = deque()
    # Keys with a pending tick (tick time, subject); an entry is checked against the state when it comes due.
    ticking: list[tuple[int, str]] = []
    noted: dict[str, int] = {}  # each subject's newest entry in `ticking`
    newest: int | None = None

    def apply(subject: str, outcome: Outcome) -> None:
        states[subject] = outcome.state
        for alert in outcome.alerts:
            summary.alerts[alert.type] += 1
            emit(alert)
        pending.extend(outcome.forwards)
        if outcome.state.ticks:
            at = min(outcome.state.ticks.values())
            if noted.get(subject) != at:  # a timer pending for weeks is in the heap once, not once per record
                noted[subject] = at
                heapq.heappush(ticking, (at, subject))

    counted = _Counting(_entries(inputs, summary))
    with sorted_entries(counted, sort_buffer) as ordered:
        summary.runs = max(1, -(-counted.count // sort_buffer))
        summary.expected = counted.count
        for when, kind, _, line in ordered:
            record = decode(line, _model(kind))
            if isinstance(record, Rejection):  # it was valid when read: cannot happen, but never process it
                continue
            subject = record.subject
            if isinstance(record, RequestRecord):
                summary.requests += 1
                apply(subject, engine.on_request(states.get(subject), record))
            else:
                summary.lifecycle += 1
                apply(subject, engine.on_lifecycle(states.get(subject), record))
            while pending:
                fwd = pending.popleft()
                apply(fwd.subject, engine.on_forward(states.get(fwd.subject), fwd))
            if newest is None or when > newest:
                newest = when
            if ticking and ticking[0][0] <= engine.watermark(newest):
                _run_due_ticks(engine, engine.watermark(newest), ticking, noted, states, apply, pending)
            if progress is not None and summary.records % 4096 == 0:
                now = time.monotonic()
                if now - last >= progress_every:
                    last = now
                    summary.seconds, summary.keys = now - started, len(states)
                    progress(summary)
    summary.seconds, summary.keys = time.monotonic() - started, len(states)
    return summary


def _run_due_ticks(
    engine: Engine,
    watermark: int,
    ticking: list[tuple[int, str]],
    noted: dict[str, int],
    states: dict[str, KeyState],
    apply: Callable[[str, Outcome], None],
    pending: deque[Forward],
) -> None:
    """Run the ticks due at `watermark` (the worker does the same per partition, pipeline/ticks.py)."""
    while ticking and ticking[0][0] <= watermark:
        at, subject = heapq.heappop(ticking)
        if noted.get(subject) == at:
            del noted[subject]
        state = states.get(subject)
        due = state.next_tick() if state is not None else None
        if state is None or due is None or due > watermark:
            continue  # a stale entry: the tick ran with a record of the key, or moved (its own entry exists)
        apply(subject, engine.on_tick(state, watermark))
        while pending:
            fwd = pending.popleft()
            apply(fwd.subject, engine.on_forward(states.get(fwd.subject), fwd))


def tenant_of(line: bytes) -> bytes:
    """The `tenant` value of a JSON line, found without parsing it (b"" when there is none)."""
    at = line.find(b'"tenant"')
    if at < 0:
        return b""
    start = line.find(b'"', line.find(b":", at + 8) + 1)
    end = line.find(b'"', start + 1)
    return line[start + 1 : end] if 0 <= start < end else b""


def shard_of(line: bytes, shards: int) -> int:
    """The shard a line belongs to: by tenant, so rotations (forwards within a tenant) stay in one shard."""
    return zlib.crc32(tenant_of(line)) % shards


def _shard_lines(sources: Sequence[str], shard: int, shards: int) -> Iterator[bytes]:
    for source in sources:
        for line in read_lines(source):
            if shard_of(line, shards) == shard:
                yield line


def _run_shard(
    args: tuple[Sequence[str], Sequence[str], Callable[[], Engine], int, int, Path, int],
) -> ReplaySummary:
    requests, lifecycle, make_engine, shard, shards, out, sort_buffer = args
    with out.open("w") as sink:

        def emit(alert: Alert) -> None:
            sink.write(alert.model_dump_json() + "\n")

        inputs = [Input.requests(s, _shard_lines([s], shard, shards)) for s in requests]
        inputs += [Input.lifecycle(s, _shard_lines([s], shard, shards)) for s in lifecycle]
        return replay_inputs(inputs, make_engine(), emit, sort_buffer=sort_buffer)


def _sources(given: Sequence[str | Path] | str | Path | None) -> list[str]:
    if given is None:
        return []
    if isinstance(given, str | Path):
        return [str(given)]
    return [str(g) for g in given]


def replay_parallel(
    requests: Sequence[str | Path] | str | Path | None,
    lifecycle: Sequence[str | Path] | str | Path | None,
    make_engine: Callable[[], Engine],
    out: IO[str],
    jobs: int,
    sort_buffer: int = DEFAULT_SORT_BUFFER,
    on_shard: Callable[[int, ReplaySummary], None] | None = None,
) -> ReplaySummary:
    """`replay` in `jobs` processes, one shard of tenants each; alerts are written to `out` in event-time order.
    `on_shard(shard, summary)` is called in this process as each shard finishes.

    Tenants share nothing (a rotation hands a baseline to a key of the same tenant), so sharding by tenant gives
    exactly the alerts of a single-process replay. Each process reads the whole files and parses only its lines
    (so no input can be stdin), and sorts its own records with a sort buffer of `sort_buffer` lines.
    """
    request_sources, lifecycle_sources = _sources(requests), _sources(lifecycle)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="keywatch-replay-") as tmp:
        parts = [Path(tmp) / f"alerts-{i}.jsonl" for i in range(jobs)]
        context = multiprocessing.get_context("fork")  # the engine factory is a closure: fork, don't pickle it
        results = context.Queue()

        def run(shard: int) -> None:
            args = (request_sources, lifecycle_sources, make_engine, shard, jobs, parts[shard], sort_buffer)
            try:
                results.put((shard, _run_shard(args)))
            except InputError as exc:  # a corrupt input: say so once, in the parent, as one line
                results.put((shard, exc))

        workers = [context.Process(target=run, args=(i,), name=f"keywatch-replay-{i}") for i in range(jobs)]
        for worker in workers:
            worker.start()
        got: dict[int, ReplaySummary] = {}
        while len(got) < jobs:
            try:
                shard, result = results.get(timeout=1.0)
                if isinstance(result, InputError):
                    for worker in workers:
                        worker.terminate()
                    raise result
                got[shard] = result
                if on_shard is not None:
                    on_shard(shard, result)
            except queue.Empty:
                failed = [w for w in workers if w.exitcode not in (None, 0)]
                if failed:
                    for worker in workers:
                        worker.terminate()
                    raise RuntimeError(
                        f"replay shard {failed[0].name} failed (exit code {failed[0].exitcode})"
                    ) from None
        for worker in workers:
            worker.join()
        summaries = [got[i] for i in range(jobs)]
        lines: list[tuple[str, str, bytes]] = []
        for part in parts:
            with part.open("rb") as fh:
                for line in fh:
                    head = orjson.loads(line)
                    lines.append((head["time"], head["id"], line))
        lines.sort()
        for _, _, line in lines:
            out.write(line.decode())
    total = ReplaySummary()
    for s in summaries:
        total.requests += s.requests
        total.lifecycle += s.lifecycle
        total.rejected.update(s.rejected)
        total.rejected_examples.extend(s.rejected_examples[: 5 - len(total.rejected_examples)])
        total.alerts.update(s.alerts)
        total.keys += s.keys
        total.out_of_order += s.out_of_order
        total.max_disorder_ms = max(total.max_disorder_ms, s.max_disorder_ms)
        total.runs = max(total.runs, s.runs)
        total.allowed_lateness_ms = s.allowed_lateness_ms
    total.seconds = time.monotonic() - started
    return total
