"""Lifecycle burst: one actor performs `min_operations` (5) or more lifecycle operations (creations, scope
changes, revocations) in one tenant within `window_minutes` (10) — a compromised admin session minting and
re-scoping keys, or a script doing what only a person in the portal should (`apiKey.lifecycleBurst`, a tenant
alert).

Each key's lifecycle event is handed to the tenant's state (`Forward.to_tenant`, one per event); the tenant keeps,
per actor, the recent operations (`BurstState`) and decides over them in event-time order, whatever order they
arrive in: a burst is a window of `window_minutes` from an operation holding `min_operations` operations;
when an arriving operation completes one, the earliest such window holding it is the burst, its id is (actor,
first operation's time) and its alert time the time of the operation that completes it (the
`min_operations`-th), its evidence the operations from the first to that one. Later operations within a window of
the burst extend it (one alert per burst, however long it goes on).

Residual order sensitivity: in the worker, operations of different keys reach the tenant in another order than
in replay. Whether a burst fires, and once, does not depend on it; its id does not either unless a burst's
first operations arrive after the ones that complete it (a hand-off delayed by more than the burst's own
length): the worker then names the burst by the first operation it knows. The alert's time and evidence are
those of the operations known when it fires: replay's when the hand-offs arrive in event-time order, otherwise
a later completing operation (and what it brought). Operations evicted by the caps below are forgotten.

Caps (per tenant): `MAX_ACTORS` actors (the least recently active is forgotten), `MAX_OPS` operations per actor
(the oldest by event time go; nothing is dropped by age alone, so an operation that arrives a day late — a
backlog caught up — still counts), `MAX_BURSTS` bursts per actor remembered (the most recent).
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import LifecycleEvent, format_time
from keywatch.core.engine import Forward
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "lifecycle_burst"
ALERT_TYPE = "apiKey.lifecycleBurst"
OPERATION = "lifecycle_burst.op"  # key -> tenant: one lifecycle operation
MAX_ACTORS = 32
MAX_OPS = 24
MAX_BURSTS = 4
MAX_KEYS_SHOWN = 20
MAX_ACTOR = 200  # characters of an actor kept
_KINDS = {"apiKey.created": "c", "apiKey.scopeChanged": "s", "apiKey.revoked": "r"}
_NAMES = {code: name for name, code in _KINDS.items()}


class Operation(msgspec.Struct, array_like=True, gc=False):
    """One lifecycle operation: when, which (c / s / r), on which key."""

    ms: int
    kind: str
    key_id: str


class Burst(msgspec.Struct, array_like=True, gc=False):
    """A burst already alerted: from its first operation to the last one that extended it."""

    first_ms: int
    last_ms: int


class ActorOps(msgspec.Struct, array_like=True, gc=False):
    """One actor's recent operations in the tenant (event-time order) and bursts."""

    newest_ms: int
    ops: list[Operation] = []
    bursts: list[Burst] = []


class BurstState(msgspec.Struct, array_like=True, gc=False):
    """The tenant's actors (kept in the tenant's state only)."""

    actors: dict[str, ActorOps] = {}


class LifecycleBurstConfig(BaseModel):
    """Settings of the lifecycle-burst detector (`[detection.lifecycle_burst]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    min_operations: int = Field(
        default=5, ge=2, le=MAX_OPS, description="Operations by one actor in one tenant within the window that fire."
    )
    window_minutes: float = Field(default=10.0, gt=0, le=1440, description="The window, in minutes.")


class LifecycleBurst(Detector[BurstState]):
    """Keys hand each lifecycle operation to the tenant; the tenant alerts on an actor's burst."""

    def __init__(self, config: LifecycleBurstConfig) -> None:
        self.config = config
        self._window = int(config.window_minutes * 60_000)

    def on_lifecycle(self, key: KeyState, event: LifecycleEvent, ts_ms: int) -> Effects:
        """Hand the operation to the tenant's state."""
        if not self.config.enabled:
            return None
        payload = {"actor": event.actor[:MAX_ACTOR], "kind": _KINDS[event.type], "key_id": event.key_id, "ms": ts_ms}
        return [Forward.to_tenant(event.tenant, OPERATION, payload, ts_ms)]

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """(Tenant) remember the operation; alert when it completes a burst not alerted yet."""
        if forward.kind != OPERATION or not key.is_tenant or not self.config.enabled:
            return None
        payload = forward.payload
        actor = str(payload["actor"])
        op = Operation(int(payload["ms"]), str(payload["kind"]), str(payload["key_id"]))
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = BurstState()
        mine = st.actors.get(actor)
        if mine is None:
            if len(st.actors) >= MAX_ACTORS:
                del st.actors[min(st.actors, key=lambda a: (st.actors[a].newest_ms, a))]
            mine = st.actors[actor] = ActorOps(op.ms)
        if not _insert(mine, op):
            return None
        return self._decide(mine, actor, op)

    def _decide(self, mine: ActorOps, actor: str, op: Operation) -> Effects:
        need, window, ops = self.config.min_operations, self._window, mine.ops
        times = [o.ms for o in ops]
        for a, start in enumerate(times):
            if start > op.ms:
                break
            if start + window < op.ms:
                continue
            end = a
            while end + 1 < len(times) and times[end + 1] <= start + window:
                end += 1
            if end - a + 1 < need:
                continue
            complete = times[a + need - 1]
            for burst in mine.bursts:
                if start <= burst.last_ms + window and start + window >= burst.first_ms:
                    burst.first_ms, burst.last_ms = min(burst.first_ms, start), max(burst.last_ms, times[end])
                    return None
            mine.bursts.append(Burst(start, times[end]))
            mine.bursts.sort(key=lambda b: b.last_ms)
            del mine.bursts[:-MAX_BURSTS]
            shown = [o for o in ops[a:] if o.ms <= complete]
            return [self._finding(actor, shown, start, complete)]
        return None

    def _finding(self, actor: str, ops: list[Operation], start: int, complete: int) -> Finding:
        by_type: dict[str, int] = {}
        for o in ops:
            name = _NAMES.get(o.kind, o.kind)
            by_type[name] = by_type.get(name, 0) + 1
        keys = sorted({o.key_id for o in ops})
        minutes = round((complete - start) / 60_000, 1)
        kinds = ", ".join(f"{n} {t.removeprefix('apiKey.')}" for t, n in sorted(by_type.items()))
        evidence: dict[str, Any] = {
            "actor": actor,
            "operations": len(ops),
            "by_type": dict(sorted(by_type.items())),
            "key_ids": keys[:MAX_KEYS_SHOWN],
            "distinct_keys": len(keys),
            "first": format_time(start),
            "last": format_time(complete),
            "window_minutes": self.config.window_minutes,
            "min_operations": self.config.min_operations,
        }
        return Finding(
            type=ALERT_TYPE,
            id_parts=(actor, str(start)),
            summary=(
                f"{actor} made {len(ops)} key lifecycle operations on {len(keys)} keys in {minutes:g} min ({kinds})."
            ),
            evidence=evidence,
            time_ms=complete,
        )


def _insert(mine: ActorOps, op: Operation) -> bool:
    """Add `op` in event-time order (False: known already, or the oldest of a full list); drop the oldest past
    the cap."""
    ops = mine.ops
    if any(o.ms == op.ms and o.kind == op.kind and o.key_id == op.key_id for o in ops):
        return False
    at = sum(1 for o in ops if (o.ms, o.kind, o.key_id) <= (op.ms, op.kind, op.key_id))
    ops.insert(at, op)
    mine.newest_ms = max(mine.newest_ms, op.ms)
    if len(ops) > MAX_OPS:
        del ops[: len(ops) - MAX_OPS]
    return op in ops


def _build(config: LifecycleBurstConfig, context: BuildContext) -> LifecycleBurst:
    return LifecycleBurst(config)


SPEC: DetectorSpec[LifecycleBurstConfig, BurstState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "high"),),
    config=LifecycleBurstConfig,
    state=BurstState,
    build=_build,
    scope="both",
    summary=ALERT_TYPE,
)
