"""Key age and idleness (apiKey.rotationOverdue, apiKey.unused): tick-driven, the same ids in replay and in a
worker-like run (forwards delivered late and out of order, ticks at a lagging watermark), state in the codec."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from coretest import DAY, HOUR, MINUTE, T0

from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core import rotation_age, unused
from keywatch.core.codec import decode_state, encode_state
from keywatch.core.engine import Engine, Forward, Outcome
from keywatch.core.state import KeyState
from keywatch.replay import replay

OVERDUE = rotation_age.ALERT_TYPE
UNUSED = unused.ALERT_TYPE
Event = dict[str, Any]


def req(key_id: str, ts: int, tenant: str = "acme") -> Event:
    """A request of `key_id` at `ts` (ms)."""
    return {"ts": ts, "tenant": tenant, "key_id": key_id, "env": "live", "ip": "192.0.2.10", "method": "GET",
            "path": "/v1/orders", "status": 200}  # fmt: skip


def life(kind: str, key_id: str, ts: int, tenant: str = "acme", replaces: str | None = None) -> Event:
    """A lifecycle event (`created`, `revoked`) of `key_id` at `ts`."""
    return {"type": f"apiKey.{kind}", "ts": ts, "tenant": tenant, "key_id": key_id, "name": f"{key_id} svc",
            "env": "live", "role": "read", "actor": "alice@example.com", "replaces_key_id": replaces}  # fmt: skip


def every(key_id: str, start: int, end: int, step: int, tenant: str = "acme") -> list[Event]:
    """Requests of `key_id` from `start` (inclusive) to `end` (exclusive) every `step`."""
    return [req(key_id, ts, tenant) for ts in range(start, end, step)]


def run(events: Iterable[Event], engine: Engine) -> list[Alert]:
    """keywatch replay over the events (requests and lifecycle events, any order)."""
    items = list(events)
    requests = [orjson.dumps(e) for e in items if "type" not in e]
    lifecycle = [orjson.dumps(e) for e in items if "type" in e]
    alerts: list[Alert] = []
    replay(requests, lifecycle, engine, alerts.append)
    return alerts


def of(alerts: list[Alert], kind: str) -> list[Alert]:
    """The alerts of one type."""
    return [a for a in alerts if a.type == kind]


def ms(alert: Alert) -> int:
    """An alert's time in epoch ms."""
    return int(alert.time.timestamp() * 1000)


# -- rotationOverdue ----------------------------------------------------------------------------------------------


def test_overdue_fires_on_the_first_request_past_the_age(engine_factory: Callable[..., Engine]) -> None:
    """Created at T0: a request at 80 days is quiet (and too long ago when the age is reached at 90), the first
    one after 90 days alerts (low) at its time; the next one in the same 7-day slot does not."""
    events = [life("created", "key-1", T0), req("key-1", T0 + 80 * DAY), req("key-1", T0 + 100 * DAY)]
    events += [req("key-1", T0 + 100 * DAY + HOUR)]
    [alert] = of(run(events, engine_factory()), OVERDUE)
    ev = alert.data.evidence
    assert (ms(alert), alert.severity, alert.subject) == (T0 + 100 * DAY, "low", "acme/key-1")
    assert (ev["age_days"], ev["max_age_days"], ev["overdue_days"], ev["reminder"]) == (100.0, 90.0, 10.0, 2)
    assert ev["created_at"] == "2024-03-04T00:00:00.000Z"
    assert alert.data.runbook.endswith("#rotationoverdue")


def test_overdue_is_medium_past_twice_the_age(engine_factory: Callable[..., Engine]) -> None:
    """A key used 181 days after its creation: medium."""
    [alert] = of(run([life("created", "key-1", T0), req("key-1", T0 + 181 * DAY)], engine_factory()), OVERDUE)
    assert alert.severity == "medium"


def test_a_key_whose_creation_was_never_seen_is_never_overdue(engine_factory: Callable[..., Engine]) -> None:
    """Used for 200 days, no creation event: its age is unknown."""
    assert of(run(every("key-1", T0, T0 + 200 * DAY, DAY), engine_factory()), OVERDUE) == []


def test_a_started_rotation_keeps_it_quiet(engine_factory: Callable[..., Engine]) -> None:
    """A replacement created with replaces_key_id before the age: the old key, still used in the overlap, is
    not overdue (and not reminded later either)."""
    events = [life("created", "key-1", T0), life("created", "key-2", T0 + 85 * DAY, replaces="key-1")]
    events += every("key-1", T0 + 80 * DAY, T0 + 110 * DAY, 6 * HOUR)
    events += every("key-2", T0 + 86 * DAY, T0 + 110 * DAY, DAY)
    assert of(run(events, engine_factory()), OVERDUE) == []


def test_a_rotation_started_after_the_alert_stops_the_reminders(engine_factory: Callable[..., Engine]) -> None:
    """Overdue at 90 days, rotated at 92: one alert, no reminder at 97."""
    events = [life("created", "key-1", T0), life("created", "key-2", T0 + 92 * DAY, replaces="key-1")]
    events += every("key-1", T0 + 85 * DAY, T0 + 110 * DAY, 6 * HOUR)
    [alert] = of(run(events, engine_factory()), OVERDUE)
    assert ms(alert) == T0 + 90 * DAY


def test_revocation_stops_it(engine_factory: Callable[..., Engine]) -> None:
    """A key revoked at 85 days and still used later is a revoked-use matter, not an overdue rotation."""
    events = [life("created", "key-1", T0), life("revoked", "key-1", T0 + 85 * DAY), req("key-1", T0 + 95 * DAY)]
    assert of(run(events, engine_factory()), OVERDUE) == []


def test_reminders_every_repeat_days_at_the_slot_start_while_used(engine_factory: Callable[..., Engine]) -> None:
    """Used every 6 hours across the age: alerts at exactly 90, 97 and 104 days (ticks), distinct ids."""
    events = [life("created", "key-1", T0), *every("key-1", T0 + 85 * DAY, T0 + 110 * DAY, 6 * HOUR)]
    alerts = of(run(events, engine_factory()), OVERDUE)
    assert [ms(a) for a in alerts] == [T0 + 90 * DAY, T0 + 97 * DAY, T0 + 104 * DAY]
    assert [a.data.evidence["reminder"] for a in alerts] == [1, 2, 3]
    assert len({a.id for a in alerts}) == 3


def test_a_key_not_used_at_the_age_alerts_at_its_next_request(engine_factory: Callable[..., Engine]) -> None:
    """Last used at 10 days: the tick at 90 days is quiet (not used), the request at 100 days alerts."""
    events = [life("created", "key-1", T0), req("key-1", T0 + 10 * DAY), *every("key-2", T0, T0 + 99 * DAY, DAY)]
    events += [req("key-1", T0 + 100 * DAY)]
    [alert] = of(run(events, engine_factory()), OVERDUE)
    assert ms(alert) == T0 + 100 * DAY


def test_settings_change_the_age(engine_factory: Callable[..., Engine]) -> None:
    """max_age_days 30: a request at 31 days alerts."""
    events = [life("created", "key-1", T0), req("key-1", T0 + 31 * DAY)]
    assert len(of(run(events, engine_factory(rotation_age={"max_age_days": 30})), OVERDUE)) == 1
    assert of(run(events, engine_factory(rotation_age={"enabled": False})), OVERDUE) == []


def test_is_overdue_from_the_alert_until_rotation_or_revocation(engine_factory: Callable[..., Engine]) -> None:
    """The hygiene gauge's predicate."""
    engine = engine_factory()
    created = engine.on_lifecycle(None, LifecycleEvent.model_validate(life("created", "key-1", T0))).state
    assert not rotation_age.is_overdue(created)
    state = engine.on_request(created, RequestRecord.model_validate(req("key-1", T0 + 91 * DAY))).state
    assert rotation_age.is_overdue(state)
    rotated = engine.on_forward(
        decode_state(encode_state(state)), Forward("acme", "key-1", "rotated", {"replaced_by": "k2"}, T0 + 92 * DAY)
    ).state
    assert not rotation_age.is_overdue(rotated)
    revoked = engine.on_lifecycle(state, LifecycleEvent.model_validate(life("revoked", "key-1", T0 + 93 * DAY))).state
    assert not rotation_age.is_overdue(revoked)


# -- unused -------------------------------------------------------------------------------------------------------


def test_a_used_key_idle_for_idle_days_alerts_on_the_tick_and_again(engine_factory: Callable[..., Engine]) -> None:
    """Last request at 1 day: alerts at exactly 31 and 61 days (ticks, the tenant's other key keeps the log
    going), low, 'last request'."""
    events = [req("key-1", T0), req("key-1", T0 + DAY), *every("key-2", T0, T0 + 70 * DAY, 6 * HOUR)]
    alerts = of(run(events, engine_factory()), UNUSED)
    assert [(a.subject, ms(a)) for a in alerts] == [("acme/key-1", T0 + 31 * DAY), ("acme/key-1", T0 + 61 * DAY)]
    ev = alerts[0].data.evidence
    assert (alerts[0].severity, ev["idle_days"], ev["idle_since_what"], ev["reminder"]) == (
        "low",
        30.0,
        "last request",
        1,
    )
    assert alerts[0].data.runbook.endswith("#unused")
    assert alerts[0].id != alerts[1].id


def test_a_key_used_once_after_29_days_is_not_unused(engine_factory: Callable[..., Engine]) -> None:
    """Requests at 0 and 29 days: the clock restarts; nothing before 59 days."""
    events = [req("key-1", T0), req("key-1", T0 + 29 * DAY), *every("key-2", T0, T0 + 58 * DAY, 6 * HOUR)]
    assert of(run(events, engine_factory()), UNUSED) == []
    events += every("key-2", T0 + 58 * DAY, T0 + 60 * DAY, 6 * HOUR)
    assert [ms(a) for a in of(run(events, engine_factory()), UNUSED)] == [T0 + 59 * DAY]


def test_a_key_in_steady_use_is_never_unused(engine_factory: Callable[..., Engine]) -> None:
    """Used every day for 100 days."""
    assert of(run(every("key-1", T0, T0 + 100 * DAY, DAY), engine_factory()), UNUSED) == []


def test_a_never_used_key_counts_from_its_creation(engine_factory: Callable[..., Engine]) -> None:
    """Created at 1 day in a tenant with coverage from T0, never used: an alert at 31 days, 'never used'."""
    events = [life("created", "key-1", T0 + DAY), *every("key-2", T0, T0 + 40 * DAY, 6 * HOUR)]
    [alert] = of(run(events, engine_factory()), UNUSED)
    assert (ms(alert), alert.data.evidence["idle_since_what"]) == (T0 + 31 * DAY, "creation")
    assert "never used" in alert.data.summary


def test_a_backfilled_audit_log_counts_only_from_the_coverage_start(engine_factory: Callable[..., Engine]) -> None:
    """Keys created 200 days before the request log starts (T0 + 30 min, rounded up to T0 + 1 h): the never-used
    one alerts 30 days after the coverage start, not at once; the one used on day 3 not at all."""
    events = [life("created", "key-1", T0 - 200 * DAY), life("created", "key-3", T0 - 200 * DAY)]
    events += [req("key-3", T0 + 3 * DAY), *every("key-2", T0 + 30 * MINUTE, T0 + 32 * DAY, 6 * HOUR)]
    alerts = of(run(events, engine_factory()), UNUSED)
    assert [(a.data.key_id, ms(a)) for a in alerts] == [("key-1", T0 + HOUR + 30 * DAY)]
    assert alerts[0].data.evidence["idle_since_what"] == "coverage start"


def test_without_any_request_of_the_tenant_nothing_is_unused(engine_factory: Callable[..., Engine]) -> None:
    """An audit log alone (another tenant's traffic moves time on): no coverage, no alert."""
    events = [life("created", "key-1", T0), *every("key-9", T0, T0 + 60 * DAY, 6 * HOUR, tenant="globex")]
    assert of(run(events, engine_factory()), UNUSED) == []


def test_revocation_stops_the_idle_clock(engine_factory: Callable[..., Engine]) -> None:
    """A used key and a never-used one, both revoked within 30 days: no alert."""
    events = [life("created", "key-1", T0), req("key-1", T0 + HOUR), life("revoked", "key-1", T0 + 10 * DAY)]
    events += [life("created", "key-3", T0 + DAY), life("revoked", "key-3", T0 + 2 * DAY)]
    events += every("key-2", T0, T0 + 70 * DAY, 6 * HOUR)
    assert of(run(events, engine_factory()), UNUSED) == []


def test_is_unused_from_the_alert_until_the_next_request(engine_factory: Callable[..., Engine]) -> None:
    """The hygiene gauge's predicate: set by the alert, cleared by a request, false once revoked."""
    engine = engine_factory()
    state = engine.on_request(None, RequestRecord.model_validate(req("key-1", T0))).state
    assert not unused.is_unused(state)
    fired = engine.on_tick(state, T0 + 30 * DAY)
    assert len(of(fired.alerts, UNUSED)) == 1
    assert unused.is_unused(fired.state)
    later = RequestRecord.model_validate(req("key-1", T0 + 31 * DAY))
    again = engine.on_request(decode_state(encode_state(fired.state)), later)
    assert not unused.is_unused(again.state)


def test_the_tenant_follows_at_most_max_never_used_keys() -> None:
    """Beyond the cap a never-used key is counted as dropped, not followed."""
    detector = unused.Unused(unused.UnusedConfig())
    detector.name = unused.NAME
    tenant = KeyState("acme", "")
    for i in range(unused.MAX_NEVER_USED + 2):
        detector.on_forward(tenant, Forward.to_tenant("acme", unused.CREATED, {"key": f"k{i}", "created": T0}, T0))
    st = tenant.detectors[unused.NAME]
    assert (len(st.never_used), st.dropped) == (unused.MAX_NEVER_USED, 2)


# -- replay and worker, codec --------------------------------------------------------------------------------------


class LateWorker:
    """Like the worker: events in order, states through the codec, forwards delivered late and out of order
    (each once the event time has moved up to `delay_ms` past it, in a shuffled order), ticks run for every
    state once the lagging watermark (newest event time minus the allowed lateness) passes them."""

    def __init__(self, engine: Engine, delay_ms: int, seed: int) -> None:
        self.engine, self.delay_ms, self.rng = engine, delay_ms, random.Random(seed)
        self.states: dict[str, KeyState] = {}
        self.pending: list[tuple[int, Forward]] = []
        self.alerts: list[Alert] = []

    def apply(self, subject: str, outcome: Outcome) -> None:
        """Keep the state (encoded and decoded), the alerts, and schedule the forwards."""
        self.states[subject] = decode_state(encode_state(outcome.state))
        self.alerts.extend(outcome.alerts)
        for forward in outcome.forwards:
            forward = Forward(**orjson.loads(orjson.dumps(forward)))
            self.pending.append((forward.ts_ms + self.rng.randint(1, self.delay_ms), forward))

    def run(self, events: list[Event]) -> list[Alert]:
        """Process `events` (sorted by time, lifecycle first on a tie); deliver everything at the end."""
        newest = None
        for event in events:
            record: RequestRecord | LifecycleEvent
            if "type" in event:
                record = LifecycleEvent.model_validate(event)
                self.apply(record.subject, self.engine.on_lifecycle(self.states.get(record.subject), record))
            else:
                record = RequestRecord.model_validate(event)
                self.apply(record.subject, self.engine.on_request(self.states.get(record.subject), record))
            newest = event["ts"] if newest is None else max(newest, event["ts"])
            while due := [f for at, f in self.pending if at <= newest]:
                self.pending = [(at, f) for at, f in self.pending if at > newest]
                self.rng.shuffle(due)
                for forward in due:
                    self.apply(forward.subject, self.engine.on_forward(self.states.get(forward.subject), forward))
            watermark = self.engine.watermark(newest)
            for subject, state in sorted(self.states.items()):
                tick = state.next_tick()
                if tick is not None and tick <= watermark:
                    self.apply(subject, self.engine.on_tick(state, watermark))
        return self.alerts


def _fleet(seed: int) -> list[Event]:
    """Two tenants, backfilled old creations, rotations, revocations, idle and never-used keys over 130 days."""
    rng = random.Random(seed)
    events: list[Event] = []
    for tenant in ("acme", "globex"):
        for i in range(8):
            key = f"{tenant}-{i}"
            created = T0 - rng.randrange(0, 200) * DAY + rng.randrange(DAY)
            events.append(life("created", key, created, tenant))
            if i == 7:
                continue  # never used
            start = T0 + rng.randrange(0, 5 * DAY)
            stop = T0 + rng.randrange(20, 130) * DAY
            step = rng.choice((3 * HOUR, 9 * HOUR, 2 * DAY))
            events += every(key, start, stop, step + rng.randrange(MINUTE), tenant)
            if i == 2:
                events.append(life("created", f"{key}-new", T0 + rng.randrange(10, 60) * DAY, tenant, replaces=key))
            if i == 3:
                events.append(life("revoked", key, T0 + rng.randrange(10, 60) * DAY, tenant))
        events.append(life("created", f"{tenant}-late", T0 + 40 * DAY, tenant))
    events += every("clock", T0, T0 + 140 * DAY, 4 * HOUR, "zeta")
    return sorted(events, key=lambda e: (e["ts"], "type" not in e))


def test_replay_and_a_late_worker_give_the_same_ids(engine_factory: Callable[..., Engine]) -> None:
    """Forwards delivered up to 12 h of event time late and shuffled (coverage starts told out of order,
    rotation hand-offs after later requests of the old key), ticks at the lagging watermark: the same alerts,
    ids and times as replay."""
    for seed in (1, 2, 3):
        events = _fleet(seed)

        def mine(alerts: list[Alert]) -> list[tuple[str, str, str]]:
            return sorted((a.id, a.type, a.time.isoformat()) for a in alerts if a.type in (OVERDUE, UNUSED))

        by_replay = mine(run(events, engine_factory()))
        by_worker = mine(LateWorker(engine_factory(), delay_ms=12 * HOUR, seed=seed).run(events))
        assert by_worker == by_replay
        assert {t for _, t, _ in by_replay} == {OVERDUE, UNUSED}


def test_state_survives_the_codec(engine_factory: Callable[..., Engine]) -> None:
    """Key and tenant slots decode to what was encoded (a restart keeps coverage, followed keys, alerts)."""
    worker = LateWorker(engine_factory(), delay_ms=MINUTE, seed=0)
    worker.run(_fleet(4))
    slots = [s for s in worker.states.values() if rotation_age.NAME in s.detectors or unused.NAME in s.detectors]
    assert any(s.is_tenant for s in slots)
    assert any(not s.is_tenant for s in slots)
    for state in slots:
        assert decode_state(encode_state(state)).as_plain() == state.as_plain()


def test_the_tenant_tells_a_lower_coverage_start_again() -> None:
    """First requests told out of order: a never-used key created before them hears each lower coverage start
    (rounded up to the hour), a key created after the coverage start is answered at once and not followed."""
    detector = unused.Unused(unused.UnusedConfig())
    detector.name = unused.NAME
    tenant = KeyState("acme", "")

    def tell(kind: str, payload: dict[str, Any], ts: int) -> list[tuple[str, int]]:
        effects = detector.on_forward(tenant, Forward.to_tenant("acme", kind, payload, ts)) or []
        return [(f.key_id, f.payload["coverage"]) for f in effects if isinstance(f, Forward)]

    assert tell(unused.CREATED, {"key": "old", "created": T0 - 10 * DAY}, T0 - 10 * DAY) == []
    assert tell(unused.USED, {"key": "a"}, T0 + 5 * HOUR + 1) == [("old", T0 + 6 * HOUR)]
    assert tell(unused.USED, {"key": "b"}, T0 + 30 * MINUTE) == [("old", T0 + HOUR)]
    assert tell(unused.USED, {"key": "c"}, T0 + 50 * MINUTE) == []  # not lower once rounded
    assert tell(unused.CREATED, {"key": "new", "created": T0 + 2 * DAY}, T0 + 2 * DAY) == [("new", T0 + HOUR)]
    assert [entry[0] for entry in tenant.detectors[unused.NAME].never_used] == ["old"]
