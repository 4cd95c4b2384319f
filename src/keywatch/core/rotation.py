"""Stalled rotation: a rotation (a key created with `replaces_key_id`) whose new key is never deployed, or whose
old key keeps serving long after the new key exists (`apiKey.rotationStalled`, subject the OLD key).

Two conditions, each fired at most once per rotation, both decided by an event-time tick on the old key:
- `new_key_unused`: the new key had no request `new_key_grace_hours` after its creation while the old key is
  still used (a request in the 24 complete clock hours before). The new key decides its own idleness with a
  tick at creation + grace and tells the old key (`NEW_IDLE`); the old key then asks a tick at that time and
  decides with its own counts, once its records up to then are in (the worker's forwards may arrive before or
  after them).
- `old_key_still_used`: `rollout_window_hours` after the new key's creation the old key still serves
  >= `min_requests_per_hour` requests in the last complete clock hour before then.
Counts are per clock hour, and only complete hours before the deadline count: no request at or after it ever
does, whatever order the records come in.
Both are monotone in the old key's own requests: a record up to the lateness late that makes a quiet decision
true fires it then, with the tick's time and id, so the worker and replay give the same ids. One case is not:
a new key whose first request comes within the lateness before its grace deadline and reaches the worker
after a later request of the same key has run the deadline's tick (the idleness was already reported).

The new key (its registry `replaces` set) tells the old key about its own use with rare forwards: its first
request (`NEW_FIRST`) and one summary per clock hour with requests (`NEW_HOUR`: count, networks, user agents,
bounded), for `rollout_window_hours` + a day after its creation — never one forward per request.

State: `RotationState`, under `rotation`, only on the two keys of a rotation: the old key's requests per hour
(a ring of `HOURS` buckets, O(1) per request, kept only while the rotation is in progress), the networks and
user agents still using it (at most `MAX_NETS` / `MAX_AGENTS`), what the new key told it (its requests per hour, at
most `MAX_NETS` networks and `MAX_AGENTS` user agents).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import LifecycleEvent, RequestRecord, format_time
from keywatch.core import hygiene
from keywatch.core.engine import Forward
from keywatch.core.ip_baseline import range_of
from keywatch.core.registry import ROTATED
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "rotation"
ALERT_TYPE = "apiKey.rotationStalled"
NEW_FIRST = "rotation.new_first"  # new key -> old key: its first request (ts, network, user agent)
NEW_HOUR = "rotation.new_hour"  # new key -> old key: one clock hour of its requests
NEW_IDLE = "rotation.new_idle"  # new key -> old key: no request within the grace period
UNUSED = "new_key_unused"
LINGERING = "old_key_still_used"
HOUR_MS = 3_600_000
DAY_HOURS = 24
HOURS = 30  # hour buckets kept per key of a rotation: a day, and 6 h for a decision that comes late
MAX_NETS = 8  # networks kept per side (old key's users, new key's)
MAX_AGENTS = 4  # user agents kept per side
AGENT_CHARS = 96
SUMMARY_EXTRA_MS = 24 * HOUR_MS  # the new key reports this long past the rollout window

RotationStatus = Literal["in_progress", "stalled"]


class RotationState(msgspec.Struct, array_like=True, gc=False):
    """One key's side of a rotation: `is_new` for the replacement, else the replaced (old) key."""

    peer: str  # the other key of the rotation
    created_ms: int  # when the new key was created (the rotation's start)
    is_new: bool
    hour: int = 0  # newest hour counted in `counts`
    counts: list[int] = []  # this key's requests per hour, slot hour % HOURS (old key only)
    nets: dict[str, int] = {}  # old key: network -> last hour it used the old key
    agents: dict[str, int] = {}  # old key: user agent -> last hour
    new_first_ms: int | None = None  # old key: the new key's first request, as it told
    new_hour: int = 0
    new_counts: list[int] = []  # old key: the new key's requests per hour, from its summaries
    new_nets: list[str] = []  # old key: networks the new key serves
    new_agents: list[str] = []
    idle_at: int | None = None  # old key: the new key was idle at this time (decided at a tick then)
    checked: list[str] = []  # conditions whose tick ran
    fired: list[str] = []  # conditions that fired
    # new key's side: the summary of the current clock hour
    sent_first: bool = False
    sum_hour: int = 0
    sum_count: int = 0
    sum_nets: list[str] = []
    sum_agents: list[str] = []


class RotationConfig(BaseModel):
    """Settings of the stalled-rotation detector (`[detection.rotation]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    new_key_grace_hours: float = Field(
        default=24.0, gt=0, le=24 * 30, description="The new key must be used within this after its creation."
    )
    min_requests_per_hour: float = Field(
        default=10.0, ge=1, description="Requests/hour on the old key that count as still serving at the deadline."
    )
    rollout_window_hours: float = Field(
        default=72.0, gt=0, le=24 * 30, description="Traffic must have left the old key this long after the rotation."
    )


def _bump(counts: list[int], newest: int, hour: int, n: int = 1) -> int:
    """Add `n` to `hour` in a ring of hour buckets whose newest hour is `newest`; the newest hour after."""
    if not counts:
        counts.extend([0] * HOURS)
        newest = hour
    if hour > newest:
        for h in range(max(newest + 1, hour - HOURS + 1), hour + 1):
            counts[h % HOURS] = 0
        newest = hour
    if newest - hour < HOURS:
        counts[hour % HOURS] += n
    return newest


def _count(counts: list[int], newest: int, first: int, last: int) -> int:
    """Requests in hours [first, last] still held by the ring."""
    if not counts:
        return 0
    lo = max(first, newest - HOURS + 1)
    return sum(counts[h % HOURS] for h in range(lo, min(last, newest) + 1))


def last_hour(counts: list[int], newest: int, at_ms: int) -> int:
    """Requests in the last complete clock hour before `at_ms` (every one of them is older than `at_ms`, whatever
    came in after it)."""
    hour = at_ms // HOUR_MS
    return _count(counts, newest, hour - 1, hour - 1)


def last_day(counts: list[int], newest: int, at_ms: int) -> int:
    """Requests in the 24 complete clock hours before `at_ms`."""
    hour = at_ms // HOUR_MS
    return _count(counts, newest, hour - DAY_HOURS, hour - 1)


def _remember(table: dict[str, int], value: str, hour: int, cap: int) -> None:
    table[value] = hour
    if len(table) > cap:
        del table[min(table, key=lambda k: (table[k], k))]


def _add_distinct(items: list[str], values: list[str], cap: int) -> None:
    for value in values:
        if value not in items and len(items) < cap:
            items.append(value)


def rotation_status(key: KeyState) -> RotationStatus | None:
    """The old key's rotation: "in_progress" from its replacement's creation until its revocation, "stalled"
    once an `apiKey.rotationStalled` fired (None otherwise, and for the new key)."""
    st = key.detectors.get(NAME)
    if not isinstance(st, RotationState) or st.is_new or key.registry.revoked_ms is not None:
        return None
    return "stalled" if st.fired else "in_progress"


def is_rotating(key: KeyState) -> bool:
    """Whether the key is the old key of a rotation in progress (not stalled), for the hygiene gauges."""
    return rotation_status(key) == "in_progress"


def is_stalled(key: KeyState) -> bool:
    """Whether the key is the old key of a stalled rotation, for the hygiene gauges."""
    return rotation_status(key) == "stalled"


hygiene.register("rotation_in_progress", is_rotating)
hygiene.register("stalled", is_stalled)


class Rotation(Detector[RotationState]):
    """Finds rotations whose new key is never used or whose old key keeps serving past the rollout window."""

    def __init__(self, config: RotationConfig) -> None:
        self.config = config
        self._grace_ms = int(config.new_key_grace_hours * HOUR_MS)
        self._rollout_ms = int(config.rollout_window_hours * HOUR_MS)

    # -- hooks -----------------------------------------------------------------------------------------------

    def on_lifecycle(self, key: KeyState, event: LifecycleEvent, ts_ms: int) -> Effects:
        """A new key of a rotation: its side of the state, and the tick that checks it was used in time."""
        if not self.config.enabled or event.type != "apiKey.created" or not event.replaces_key_id:
            return None
        st = self.state(key)
        if st is None or st.created_ms != ts_ms:
            key.detectors[NAME] = RotationState(peer=event.replaces_key_id, created_ms=ts_ms, is_new=True)
            key.ask_tick(NAME, ts_ms + self._grace_ms)
        return None

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Count the old key's requests while its rotation is in progress; the new key's reports to the old."""
        st = self.state(key)
        if st is None:
            return None
        if st.is_new:
            return self._new_key_request(key, st, record, ts_ms)
        reg = key.registry
        if reg.revoked_ms is not None and ts_ms >= reg.revoked_ms:
            return None
        hour = ts_ms // HOUR_MS
        st.hour = _bump(st.counts, st.hour, hour)
        _remember(st.nets, range_of(record.ip), hour, MAX_NETS)
        if record.user_agent:
            _remember(st.agents, record.user_agent[:AGENT_CHARS], hour, MAX_AGENTS)
        if st.checked and len(st.fired) < 2:  # a late record may make a quiet decision true
            return self._recheck(key, st, ts_ms)
        return None

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """The rotation starts on the old key (`rotated`); the new key's reports."""
        if not self.config.enabled:
            return None
        st = self.state(key)
        if forward.kind == ROTATED:
            new_key = str(forward.payload["replaced_by"])
            if st is None or st.is_new or st.peer != new_key:
                key.detectors[NAME] = RotationState(peer=new_key, created_ms=forward.ts_ms, is_new=False)
                key.ask_tick(NAME, forward.ts_ms + self._rollout_ms)
            return None
        if st is None or st.is_new or forward.kind not in (NEW_FIRST, NEW_HOUR, NEW_IDLE):
            return None
        payload = forward.payload
        if forward.kind == NEW_FIRST:
            first = int(payload["ts"])
            st.new_first_ms = first if st.new_first_ms is None else min(st.new_first_ms, first)
            _add_distinct(st.new_nets, [str(payload["network"])], MAX_NETS)
            _add_distinct(st.new_agents, [str(a) for a in payload.get("agents", [])], MAX_AGENTS)
        elif forward.kind == NEW_HOUR:
            st.new_hour = _bump(st.new_counts, st.new_hour, int(payload["hour"]), int(payload["requests"]))
            _add_distinct(st.new_nets, [str(n) for n in payload["networks"]], MAX_NETS)
            _add_distinct(st.new_agents, [str(a) for a in payload["agents"]], MAX_AGENTS)
        else:
            st.idle_at = int(payload["at"])
            key.ask_tick(NAME, st.idle_at)
        return None

    def on_tick(self, key: KeyState, now_ms: int) -> Effects:
        """The new key: report idleness at the end of the grace period. The old key: decide what is due."""
        st = self.state(key)
        if st is None:
            return None
        if st.is_new:
            deadline = st.created_ms + self._grace_ms
            first = key.registry.first_seen_ms
            if now_ms >= deadline and (first is None or first >= deadline):
                payload = {"at": deadline, "created": st.created_ms}
                return [Forward(key.tenant, st.peer, NEW_IDLE, payload, deadline)]
            return None
        out: list[Finding | Forward] = []
        for condition, due in self._due(st):
            if due <= now_ms and condition not in st.checked:
                st.checked.append(condition)
                found = self._decide(key, st, condition, due)
                if found is not None:
                    out.append(found)
        pending = [due for condition, due in self._due(st) if condition not in st.checked]
        if pending:
            key.ask_tick(NAME, min(pending))
        return out or None

    # -- the new key -----------------------------------------------------------------------------------------

    def _new_key_request(self, key: KeyState, st: RotationState, record: RequestRecord, ts_ms: int) -> Effects:
        if ts_ms >= st.created_ms + self._rollout_ms + SUMMARY_EXTRA_MS:
            return None
        out: list[Finding | Forward] = []
        hour = ts_ms // HOUR_MS
        net = range_of(record.ip)
        agent = (record.user_agent or "")[:AGENT_CHARS]
        if not st.sent_first:
            st.sent_first = True
            payload: dict[str, Any] = {"ts": ts_ms, "network": net, "agents": [agent] if agent else []}
            out.append(Forward(key.tenant, st.peer, NEW_FIRST, payload, ts_ms))
        if st.sum_count and hour > st.sum_hour:
            out.append(self._summary(key, st))
        if not st.sum_count or hour > st.sum_hour:
            st.sum_hour = hour
        st.sum_count += 1
        _add_distinct(st.sum_nets, [net], MAX_NETS)
        if agent:
            _add_distinct(st.sum_agents, [agent], MAX_AGENTS)
        return out or None

    @staticmethod
    def _summary(key: KeyState, st: RotationState) -> Forward:
        payload = {"hour": st.sum_hour, "requests": st.sum_count, "networks": st.sum_nets, "agents": st.sum_agents}
        forward = Forward(key.tenant, st.peer, NEW_HOUR, payload, (st.sum_hour + 1) * HOUR_MS)
        st.sum_count, st.sum_nets, st.sum_agents = 0, [], []
        return forward

    # -- the old key's decisions -----------------------------------------------------------------------------

    def _due(self, st: RotationState) -> list[tuple[str, int]]:
        due = [(LINGERING, st.created_ms + self._rollout_ms)]
        if st.idle_at is not None:
            due.append((UNUSED, st.idle_at))
        return due

    def _recheck(self, key: KeyState, st: RotationState, ts_ms: int) -> Effects:
        out: list[Finding | Forward] = []
        for condition, due in self._due(st):
            if condition in st.checked and condition not in st.fired and ts_ms < due:
                found = self._decide(key, st, condition, due)
                if found is not None:
                    out.append(found)
        return out or None

    def _decide(self, key: KeyState, st: RotationState, condition: str, at: int) -> Finding | None:
        reg = key.registry
        if reg.revoked_ms is not None and reg.revoked_ms <= at:
            return None
        old_hour = last_hour(st.counts, st.hour, at)
        old_day = last_day(st.counts, st.hour, at)
        if condition == UNUSED:
            if old_day < 1:
                return None
        elif old_hour < self.config.min_requests_per_hour:
            return None
        st.fired.append(condition)
        return self._finding(key, st, condition, at, old_hour, old_day)

    def _finding(
        self, key: KeyState, st: RotationState, condition: str, at: int, old_hour: int, old_day: int
    ) -> Finding:
        new_hour = last_hour(st.new_counts, st.new_hour, at)
        new_day = last_day(st.new_counts, st.new_hour, at)
        total = old_day + new_day
        recent = at // HOUR_MS - DAY_HOURS - 1
        nets = sorted(n for n, h in st.nets.items() if h > recent)
        agents = sorted(a for a, h in st.agents.items() if h > recent)
        cfg = self.config
        if condition == UNUSED:
            summary = (
                f"Rotation of key {key.key_id} stalled: its replacement {st.peer} has had no request "
                f"{cfg.new_key_grace_hours:g} h after its creation while {key.key_id} is still used "
                f"({old_day} requests in the last day)."
            )
        else:
            summary = (
                f"Rotation of key {key.key_id} stalled: {cfg.rollout_window_hours:g} h after {st.peer} replaced it, "
                f"it still serves {old_hour} requests/hour from {len(nets)} network(s)."
            )
        evidence: dict[str, Any] = {
            "condition": condition,
            "old_key_id": key.key_id,
            "new_key_id": st.peer,
            "rotation_started": format_time(st.created_ms),
            "old_key_requests_last_hour": old_hour,
            "old_key_requests_last_day": old_day,
            "new_key_requests_last_hour": new_hour,
            "new_key_requests_last_day": new_day,
            "new_key_share": round(new_day / total, 3) if total else None,
            "new_key_first_request": None if st.new_first_ms is None else format_time(st.new_first_ms),
            "old_key_networks": nets,
            "old_key_user_agents": agents,
            "networks_not_on_new_key": [n for n in nets if n not in st.new_nets],
            "new_key_networks": list(st.new_nets),
            "thresholds": {
                "new_key_grace_hours": cfg.new_key_grace_hours,
                "rollout_window_hours": cfg.rollout_window_hours,
                "min_requests_per_hour": cfg.min_requests_per_hour,
            },
        }
        return Finding(
            type=ALERT_TYPE,
            id_parts=(st.peer, condition),
            discriminator=condition,
            time_ms=at,
            summary=summary,
            evidence=evidence,
        )


def _build(config: RotationConfig, context: BuildContext) -> Rotation:
    return Rotation(config)


SPEC: DetectorSpec[RotationConfig, RotationState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "low"),),
    config=RotationConfig,
    state=RotationState,
    build=_build,
    summary=ALERT_TYPE,
)
