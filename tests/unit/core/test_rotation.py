"""Stalled rotation (apiKey.rotationStalled): a new key never used, an old key still serving past the rollout
window; decided by ticks on the old key, the same ids in replay and in a worker-like run (forwards late,
ticks at a lagging watermark, records out of order within the lateness)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import orjson
from coretest import HOUR, MINUTE, T0

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core import rotation
from keywatch.core.codec import decode_state, encode_state
from keywatch.core.engine import Engine, Forward
from keywatch.core.rotation import LINGERING, UNUSED, rotation_status
from keywatch.core.state import KeyState
from keywatch.replay import replay
from keywatch.runtime import make_engine
from keywatch.sim.generator import displace

STALLED = "apiKey.rotationStalled"
IN_USE = "apiKey.revokedWhileInUse"
OLD, NEW = "key-old", "key-new"
CREATED = T0 + HOUR  # the rotation's start


def req(ts: int, key_id: str = OLD, ip: str = "192.0.2.10", agent: str = "billing/1.0") -> bytes:
    """A request record line."""
    record = {"ts": ts, "tenant": "acme", "key_id": key_id, "env": "live", "ip": ip, "method": "GET"}
    return orjson.dumps({**record, "path": "/v1/orders?limit=5", "status": 200, "user_agent": agent})


def life(kind: str, ts: int, key_id: str = OLD, replaces: str | None = None) -> bytes:
    """A lifecycle event line."""
    event = {"type": kind, "ts": ts, "tenant": "acme", "key_id": key_id, "name": "billing", "env": "live"}
    return orjson.dumps({**event, "role": "read", "actor": "alice@acme.example", "replaces_key_id": replaces})


def every(start: int, end: int, step: int, key_id: str = OLD, **kw: Any) -> list[bytes]:
    """Requests of `key_id` every `step` ms in [start, end)."""
    return [req(ts, key_id, **kw) for ts in range(start, end, step)]


def rotation_lines(new_from: int | None, old_until: int, revoke: int | None = None) -> list[bytes]:
    """The old key (created a day before) serves every 3 min until `old_until`; the new key is created at
    CREATED and serves every 3 min from `new_from` (never with None); the old key is revoked at `revoke`."""
    lines = [life("apiKey.created", T0 - 24 * HOUR), life("apiKey.created", CREATED, NEW, replaces=OLD)]
    lines += every(T0, old_until, 3 * MINUTE)
    if new_from is not None:
        lines += every(new_from, old_until + 24 * HOUR, 3 * MINUTE, NEW, ip="192.0.2.20")
    if revoke is not None:
        lines.append(life("apiKey.revoked", revoke))
    lines.append(req(CREATED + 100 * HOUR, "key-clock"))  # moves the watermark past every deadline
    return lines


def split(lines: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Requests and lifecycle events."""
    requests, lifecycle = [], []
    for line in lines:
        (lifecycle if b'"type"' in line else requests).append(line)
    return requests, lifecycle


def replayed(lines: list[bytes], engine: Engine | None = None) -> list[Alert]:
    """The alerts of `keywatch replay` over the lines."""
    alerts: list[Alert] = []
    requests, lifecycle = split(lines)
    replay(requests, lifecycle, engine or make_engine(Settings()), alerts.append)
    return alerts


def _event(line: bytes) -> RequestRecord | LifecycleEvent:
    if b'"type"' in line:
        return LifecycleEvent.model_validate_json(line)
    return RequestRecord.model_validate_json(line)


def worker_like(
    lines: list[bytes], *, seed: int = 1, forward_delay: int = 40, lag_ms: int = 20 * MINUTE
) -> list[Alert]:
    """Like the worker: records out of order within the lateness, every state through the codec, forwards
    delivered `forward_delay` records after they were sent, ticks at a watermark `lag_ms` behind the replay's."""
    engine = make_engine(Settings())
    ordered = sorted(lines, key=lambda line: int(orjson.loads(line)["ts"]))
    shuffled = [
        line
        for _, line in displace(
            ((int(orjson.loads(x)["ts"]), x) for x in ordered), engine.allowed_lateness_ms, random.Random(seed)
        )
    ]
    states: dict[str, KeyState] = {}
    alerts: list[Alert] = []
    in_flight: list[tuple[int, Forward]] = []
    newest: int | None = None

    def keep(subject: str, outcome: Any, step: int) -> None:
        states[subject] = decode_state(encode_state(outcome.state))
        alerts.extend(outcome.alerts)
        in_flight.extend((step + forward_delay, orjson.loads(orjson.dumps(f))) for f in outcome.forwards)

    def deliver(step: int) -> None:
        while in_flight and in_flight[0][0] <= step:
            _, raw = in_flight.pop(0)
            forward = Forward(**raw)
            keep(forward.subject, engine.on_forward(states.get(forward.subject), forward), step)

    def ticks(watermark: int, step: int) -> None:
        for subject in sorted(states):
            due = states[subject].next_tick()
            if due is not None and due <= watermark:
                keep(subject, engine.on_tick(states[subject], watermark), step)

    for step, line in enumerate(shuffled):
        event = _event(line)
        if isinstance(event, RequestRecord):
            keep(event.subject, engine.on_request(states.get(event.subject), event), step)
        else:
            keep(event.subject, engine.on_lifecycle(states.get(event.subject), event), step)
        deliver(step)
        when = int(event.ts.timestamp() * 1000)
        newest = when if newest is None else max(newest, when)
        ticks(engine.watermark(newest) - lag_ms, step)
    step = len(shuffled) + forward_delay
    for _ in range(4):  # drain: every forward delivered, every tick due
        deliver(step)
        ticks((newest or 0) + 1000 * HOUR, step)
        step += forward_delay
    return alerts


def of(alerts: list[Alert], kind: str = STALLED) -> list[Alert]:
    """The alerts of one type."""
    return [a for a in alerts if a.type == kind]


def final_states(lines: list[bytes]) -> dict[str, KeyState]:
    """Every key's state after the lines, processed in order with forwards delivered at once."""
    engine = make_engine(Settings())
    states: dict[str, KeyState] = {}
    pending: list[Forward] = []
    for line in sorted(lines, key=lambda x: int(orjson.loads(x)["ts"])):
        event = _event(line)
        if isinstance(event, RequestRecord):
            outcome = engine.on_request(states.get(event.subject), event)
        else:
            outcome = engine.on_lifecycle(states.get(event.subject), event)
        states[event.subject] = outcome.state
        pending.extend(outcome.forwards)
        while pending:
            forward = pending.pop(0)
            done = engine.on_forward(states.get(forward.subject), forward)
            states[forward.subject] = done.state
            pending.extend(done.forwards)
    return states


def test_a_new_key_never_used_stalls_the_rotation_at_the_grace_deadline() -> None:
    """No request on the new key 24 h after its creation while the old key serves: one low alert about the old
    key at creation + 24 h, naming both keys and the networks still on the old key."""
    lines = rotation_lines(None, CREATED + 30 * HOUR)
    [alert] = of(replayed(lines))
    ev = alert.data.evidence
    assert (alert.subject, alert.severity, ev["condition"]) == (f"acme/{OLD}", "low", UNUSED)
    assert alert.time == Alert.model_validate({**alert.model_dump(), "time": CREATED + 24 * HOUR}).time
    assert (ev["old_key_id"], ev["new_key_id"], ev["new_key_requests_last_day"], ev["new_key_first_request"]) == (
        OLD,
        NEW,
        0,
        None,
    )
    assert ev["old_key_requests_last_day"] >= 400
    assert 19 <= ev["old_key_requests_last_hour"] <= 21
    assert ev["old_key_networks"] == ev["networks_not_on_new_key"] == ["192.0.2.0/24"]
    assert ev["old_key_user_agents"] == ["billing/1.0"]
    assert ev["new_key_share"] == 0.0


def test_an_old_key_still_serving_at_the_end_of_the_rollout_window_stalls_it() -> None:
    """The new key serves from the start, but the old key's service on another network never moved: an alert
    at creation + 72 h with the share on the new key; the new key's use stops the 24 h condition."""
    lines = rotation_lines(CREATED + 10 * MINUTE, CREATED + 80 * HOUR)
    [alert] = of(replayed(lines))
    ev = alert.data.evidence
    assert ev["condition"] == LINGERING
    assert alert.time == Alert.model_validate({**alert.model_dump(), "time": CREATED + 72 * HOUR}).time
    assert ev["new_key_networks"] == ["192.0.2.0/24"]  # 192.0.2.20 is in the same /24 as the old key's host
    assert ev["networks_not_on_new_key"] == []
    assert 0.3 < ev["new_key_share"] < 0.7
    assert ev["new_key_first_request"] is not None
    assert ev["new_key_requests_last_day"] > 300


def test_a_clean_rotation_and_an_overlap_are_quiet() -> None:
    """Traffic moved within the hour and the old key revoked later; or both keys serving for a day, the old key
    then idle and never revoked: no stalled rotation, no revocation in use."""
    clean = rotation_lines(CREATED + 10 * MINUTE, CREATED + 40 * MINUTE, revoke=CREATED + 3 * HOUR)
    overlap = rotation_lines(CREATED + 10 * MINUTE, CREATED + 26 * HOUR)
    for lines in (clean, overlap):
        alerts = replayed(lines)
        assert of(alerts) == of(alerts, IN_USE) == []


def test_a_revoked_old_key_ends_the_rotation_quietly() -> None:
    """A new key never used, but the old key revoked before the deadline (traffic gone): nothing fires, and
    the rotation is no longer in progress."""
    lines = rotation_lines(None, CREATED + 2 * HOUR, revoke=CREATED + 10 * HOUR)
    assert of(replayed(lines)) == []
    assert rotation_status(final_states(lines)[f"acme/{OLD}"]) is None


def test_rotation_status_follows_the_rotation() -> None:
    """In progress from the new key's creation, stalled once an alert fired, none after the revocation; none
    for the new key and for keys without a rotation (which keep no rotation state at all)."""
    assert rotation_status(final_states(rotation_lines(CREATED + HOUR, CREATED + 5 * HOUR))[f"acme/{OLD}"]) == (
        "in_progress"
    )
    states = final_states(rotation_lines(None, CREATED + 30 * HOUR))
    assert rotation_status(states[f"acme/{NEW}"]) is None
    assert rotation.NAME not in states["acme/key-clock"].detectors
    lines = rotation_lines(None, CREATED + 30 * HOUR)
    stalled = final_states([*lines, life("apiKey.revoked", CREATED + 40 * HOUR)])
    assert rotation_status(stalled[f"acme/{OLD}"]) is None


def test_stalled_status_after_the_alert() -> None:
    """The old key's status is "stalled" once its alert fired (driven by the worker-like run's final states)."""
    engine = make_engine(Settings())
    states = final_states(rotation_lines(None, CREATED + 30 * HOUR))
    new_tick = engine.on_tick(states[f"acme/{NEW}"], CREATED + 25 * HOUR)
    [forward] = new_tick.forwards
    old = engine.on_forward(states[f"acme/{OLD}"], forward).state
    outcome = engine.on_tick(old, CREATED + 25 * HOUR)
    assert [a.type for a in outcome.alerts] == [STALLED]
    assert rotation_status(outcome.state) == "stalled"


def test_replay_and_a_worker_like_run_give_the_same_ids() -> None:
    """Both conditions, a revocation in use and a quiet rotation: the same alert ids whether replayed or run
    like the worker (forwards 40 records late, a watermark 20 min behind, records out of order)."""
    lines = rotation_lines(None, CREATED + 80 * HOUR)
    lines += [life("apiKey.created", T0, "key-b"), life("apiKey.created", CREATED, "key-b2", replaces="key-b")]
    lines += every(T0, CREATED + 80 * HOUR, 4 * MINUTE, "key-b", ip="198.51.100.7")
    lines += every(CREATED + 2 * HOUR, CREATED + 90 * HOUR, 4 * MINUTE, "key-b2", ip="203.0.113.7")
    lines += [life("apiKey.created", T0, "key-c"), *every(T0, T0 + 5 * HOUR, MINUTE, "key-c")]
    lines.append(life("apiKey.revoked", T0 + 5 * HOUR - 30_000, "key-c"))
    expected = replayed(lines)
    want = sorted(a.id for a in expected if a.type in (STALLED, IN_USE))
    assert {(a.type, a.data.evidence.get("condition")) for a in expected if a.type in (STALLED, IN_USE)} == {
        (STALLED, UNUSED),
        (STALLED, LINGERING),
        (IN_USE, None),
    }
    assert sorted(a.id for a in replayed(lines)) == sorted(a.id for a in expected)  # re-processing
    for seed, delay, lag in ((1, 40, 20 * MINUTE), (2, 400, 2 * HOUR), (3, 1, 0)):
        got = worker_like(lines, seed=seed, forward_delay=delay, lag_ms=lag)
        assert sorted(a.id for a in got if a.type in (STALLED, IN_USE)) == want, (seed, delay, lag)


def test_a_late_record_makes_a_quiet_decision_true_with_the_ticks_time_and_id() -> None:
    """At the rollout deadline the old key has 9 requests in the trailing hour: quiet. A record from before the
    deadline arriving after the tick brings it to 10: the alert fires then, at the deadline's time, with the id
    a replay (which saw the record first) gives."""
    deadline = CREATED + 72 * HOUR
    late = req(deadline - 2 * MINUTE)
    lines = [life("apiKey.created", T0 - 24 * HOUR), life("apiKey.created", CREATED, NEW, replaces=OLD)]
    lines += every(CREATED + 10 * MINUTE, CREATED + 80 * HOUR, 10 * MINUTE, NEW)
    lines += [req(deadline - HOUR + i * 6 * MINUTE + 30_000) for i in range(9)]  # 9 in the hour before
    engine = make_engine(Settings())
    states = final_states(lines)
    old = states[f"acme/{OLD}"]
    quiet = engine.on_tick(old, deadline + 10 * MINUTE)
    assert quiet.alerts == []
    fired = engine.on_request(decode_state(encode_state(quiet.state)), RequestRecord.model_validate_json(late))
    [alert] = of(fired.alerts)
    [expected] = of(replayed([*lines, late, req(CREATED + 100 * HOUR, "key-clock")]))
    assert (alert.id, alert.time, alert.data.evidence["condition"]) == (expected.id, expected.time, LINGERING)


def test_the_new_key_reports_rarely() -> None:
    """Hundreds of requests of the new key make one first-request forward and one summary per clock hour."""
    engine = make_engine(Settings())
    states = final_states([life("apiKey.created", T0 - HOUR), life("apiKey.created", CREATED, NEW, replaces=OLD)])
    state = states[f"acme/{NEW}"]
    kinds: list[str] = []
    for line in every(CREATED + MINUTE, CREATED + 5 * HOUR, 20_000, NEW):
        outcome = engine.on_request(state, RequestRecord.model_validate_json(line))
        state = outcome.state
        kinds += [f.kind for f in outcome.forwards if f.kind.startswith("rotation.")]  # (other detectors' too)
    assert kinds.count(rotation.NEW_FIRST) == 1
    assert kinds.count(rotation.NEW_HOUR) == 4  # hours 1-4 closed; the fifth is still open
    assert len(kinds) == 5
