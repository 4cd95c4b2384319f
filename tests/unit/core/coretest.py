"""Shared helpers of the detection core's tests: times, a two-partition forward router, state size."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.codec import decode_state, encode_state
from keywatch.core.engine import DetectorSet, Engine, Forward
from keywatch.core.spec import Detector, DetectorSpec
from keywatch.core.state import KeyState
from keywatch.core.suppression import DEFAULT_MAX_ENTRIES

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_709_510_400_000  # 2024-03-04T00:00:00Z, a Monday at 00:00 UTC


class Cluster:
    """Keys spread over partitions: states in a dict, forwards delivered only through `on_forward`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.states: dict[str, KeyState] = {}
        self.alerts: list[Alert] = []
        self.pending: list[Forward] = []

    def feed(self, events: Iterable[RequestRecord | LifecycleEvent], *, deliver: bool = True) -> list[Alert]:
        """Process events in order (forwards delivered after each one unless `deliver` is false)."""
        out: list[Alert] = []
        for event in events:
            state = self.states.get(event.subject)
            if isinstance(event, RequestRecord):
                outcome = self.engine.on_request(state, event)
            else:
                outcome = self.engine.on_lifecycle(state, event)
            self.states[event.subject] = self._roundtrip(outcome.state)
            out.extend(outcome.alerts)
            self.alerts.extend(outcome.alerts)
            self.pending.extend(outcome.forwards)
            if deliver:
                out.extend(self.deliver())
        return out

    def deliver(self) -> list[Alert]:
        """Deliver pending forwards (and the ones they cause) to their keys' states; the alerts they raise."""
        got: list[Alert] = []
        while self.pending:
            forward = self.pending.pop(0)
            # Over Kafka a forward is serialised: make sure nothing aliases the sender's state.
            forward = Forward(**orjson.loads(orjson.dumps(forward)))
            outcome = self.engine.on_forward(self.states.get(forward.subject), forward)
            self.states[forward.subject] = self._roundtrip(outcome.state)
            got.extend(outcome.alerts)
            self.pending.extend(outcome.forwards)
        self.alerts.extend(got)
        return got

    @staticmethod
    def _roundtrip(state: KeyState) -> KeyState:
        # The changelog stores state encoded: every test goes through that round trip.
        return decode_state(encode_state(state))


def state_bytes(state: KeyState) -> int:
    """Size of the state as written to the changelog."""
    return len(encode_state(state))


def solo(spec: DetectorSpec[Any, Any], detector: Detector[Any]) -> Engine:
    """An engine running only `detector` (declared by `spec`), for tests that drive one detector."""
    detectors = DetectorSet([(spec, detector)], DEFAULT_MAX_ENTRIES)
    return Engine(source="/keywatch/test", specs=[spec], by_env={"live": detectors, "sandbox": detectors})


def docs_problems(spec: DetectorSpec[Any, Any], doc: str) -> list[str]:
    """What a page of alert docs lacks for `spec`: a level-2 section per alert type at its runbook anchor that
    names the type, with its triage and what to do, and the detector's `[detection.<name>]` section when it has
    settings."""
    sections = {part.split("\n", 1)[0].strip().lower(): part for part in re.split(r"^## ", doc, flags=re.MULTILINE)[1:]}
    problems = []
    for alert in spec.alerts:
        section = sections.get(alert.anchor)
        if section is None:
            problems.append(f"{alert.type}: no '## {alert.anchor}' section")
        else:
            problems.extend(
                f"{alert.type}: no {part} in its section"
                for part in ("**Triage**", "**What to do**")
                if part not in section
            )
        if f"`{alert.type}`" not in doc:
            problems.append(f"{alert.type}: not named")
    if spec.config.model_fields and f"[detection.{spec.name}]" not in doc:
        problems.append(f"{spec.name}: its settings section [detection.{spec.name}] is not documented")
    return problems
