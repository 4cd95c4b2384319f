"""Offline replay: the worker's engine over JSONL files, merged in event-time order.

The same `Engine` the worker runs, with state in a dict and forwards applied at once, so a backtest on last
month's logs gives the alerts (and alert ids) the worker would have given.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.engine import Engine, Forward, Outcome
from keywatch.core.state import KeyState
from keywatch.parsing import Rejection, decode

# At equal event times, lifecycle events go first: a key created at t is known to a request at t.
_LIFECYCLE, _REQUEST = 0, 1


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
        if self.rejected:
            out.append(
                f"malformed lines skipped: {sum(self.rejected.values())} "
                + ", ".join(f"{code}={n}" for code, n in sorted(self.rejected.items()))
            )
            out.extend(f"  {example}" for example in self.rejected_examples)
        return out


def _parse(
    lines: Iterable[bytes], kind: int, label: str, summary: ReplaySummary
) -> Iterator[tuple[int, int, int, RequestRecord | LifecycleEvent]]:
    model: type[RequestRecord] | type[LifecycleEvent] = RequestRecord if kind == _REQUEST else LifecycleEvent
    for lineno, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            continue
        result = decode(stripped, model)
        if isinstance(result, Rejection):
            summary.rejected[result.code] += 1
            if len(summary.rejected_examples) < 5:
                summary.rejected_examples.append(f"{label}:{lineno}: {result.reason}")
            continue
        yield int(result.ts.timestamp() * 1000), kind, lineno, result


def replay(
    requests: Iterable[bytes],
    lifecycle: Iterable[bytes],
    engine: Engine,
    emit: Callable[[Alert], None],
    *,
    progress: Callable[[ReplaySummary], None] | None = None,
    progress_every: float = 2.0,
    labels: tuple[str, str] = ("requests", "lifecycle"),
) -> ReplaySummary:
    """Run `engine` over both inputs in event-time order; call `emit` for every alert."""
    summary = ReplaySummary()
    states: dict[str, KeyState] = {}
    started = last = time.monotonic()
    merged = heapq.merge(
        _parse(requests, _REQUEST, labels[0], summary),
        _parse(lifecycle, _LIFECYCLE, labels[1], summary),
        key=lambda item: (item[0], item[1]),
    )
    pending: deque[Forward] = deque()

    def apply(subject: str, outcome: Outcome) -> None:
        states[subject] = outcome.state
        for alert in outcome.alerts:
            summary.alerts[alert.type] += 1
            emit(alert)
        pending.extend(outcome.forwards)

    for _, kind, _, record in merged:
        subject = record.subject
        if kind == _REQUEST:
            assert isinstance(record, RequestRecord)
            summary.requests += 1
            apply(subject, engine.on_request(states.get(subject), record))
        else:
            assert isinstance(record, LifecycleEvent)
            summary.lifecycle += 1
            apply(subject, engine.on_lifecycle(states.get(subject), record))
        while pending:
            fwd = pending.popleft()
            apply(fwd.subject, engine.on_forward(states.get(fwd.subject), fwd))
        if progress is not None and summary.records % 4096 == 0:
            now = time.monotonic()
            if now - last >= progress_every:
                last = now
                summary.seconds, summary.keys = now - started, len(states)
                progress(summary)
    summary.seconds, summary.keys = time.monotonic() - started, len(states)
    return summary
