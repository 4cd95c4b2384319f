"""Unused key: an active key with no request for `idle_days`, counted only while keywatch had request-log
coverage, so a fresh deployment reading a backfilled audit log does not call every old key unused.

A used key decides alone: its idle clock starts at its last request (keywatch saw the request log then). A key
never used starts its clock at max(its creation, the tenant's coverage start), where a tenant's coverage starts
at the first request keywatch saw for any of its keys, rounded up to the hour. Scope "both":
- the key tells its tenant its creation (`unused.created`, if never used yet), its first request ever
  (`unused.used`) and the revocation of a never-used key (`unused.gone`): rare forwards, once per key;
- the tenant keeps its coverage start (the earliest first request it was told of, whatever the order the
  forwards arrive in) and the never-used keys created before it (`MAX_NEVER_USED` at most), and tells each
  such key the coverage start (`unused.coverage`) when it learns or lowers it, and a key created later at once.
Everything converges to the same coverage start whatever order the forwards arrive in, long (30 days) before
a never-used key's tick is due, so replay and the worker give the same alerts and ids.

An alert fires on the tick that crosses `idle_days` (alert time: the tick's time) and again every `idle_days`
while the key stays idle; its id is the key, the idle clock's start and the repeat index.

State: `UnusedState` under `unused` for keys told a coverage start or that alerted; the same type for
tenants. The per-request cost is two dict lookups (a pending tick, a flag to clear).
"""

from __future__ import annotations

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import LifecycleEvent, RequestRecord, format_time
from keywatch.core import hygiene
from keywatch.core.engine import Forward
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "unused"
ALERT_TYPE = "apiKey.unused"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MAX_NEVER_USED = 1000  # never-used keys a tenant follows until its coverage starts (more: not reported)

# Forward kinds (key -> tenant, then tenant -> key)
CREATED = "unused.created"
USED = "unused.used"
GONE = "unused.gone"
COVERAGE = "unused.coverage"


class UnusedState(msgspec.Struct, array_like=True, gc=False):
    """A key's side (the tenant's coverage start as told, the last alert) or a tenant's (its coverage start and
    the never-used keys created before it); one type for both, the unused fields stay empty."""

    coverage_ms: int | None = None  # the tenant's request-log coverage start
    fired_start: int | None = None  # key: idle clock start of the last alert
    fired: int = -1  # key: repeat index of the last alert for that start
    unused: bool = False  # key: alerted and not used since
    never_used: list[tuple[str, int]] = []  # tenant: (key id, creation ms), at most MAX_NEVER_USED
    dropped: int = 0  # tenant: never-used keys not followed because the list was full


class UnusedConfig(BaseModel):
    """Settings of the unused-key detector (`[detection.unused]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    idle_days: float = Field(
        default=30.0, gt=0, description="A key without a request for this long (while the log was read) is unused."
    )


def coverage_start(first_request_ms: int) -> int:
    """A tenant's coverage start from a first request: rounded up to the hour (idle time never counts before
    keywatch read the log; fewer lowerings to broadcast when forwards arrive out of order)."""
    return -(-first_request_ms // HOUR_MS) * HOUR_MS


def is_unused(key: KeyState) -> bool:
    """Whether the key is unused: from its `apiKey.unused` alert until its next request or its revocation."""
    st: UnusedState | None = key.detectors.get(NAME)
    return st is not None and st.unused and key.registry.status != "revoked"


hygiene.register("unused", is_unused)


class Unused(Detector[UnusedState]):
    """Alerts on keys idle for `idle_days` of request-log coverage, and again every `idle_days`."""

    def __init__(self, config: UnusedConfig) -> None:
        self.config = config
        self._idle_ms = max(1, int(config.idle_days * DAY_MS))

    def _own(self, key: KeyState) -> UnusedState:
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = UnusedState()
        return st

    # -- key side ----------------------------------------------------------------------------------------------

    def on_lifecycle(self, key: KeyState, event: LifecycleEvent, ts_ms: int) -> Effects:
        """Tell the tenant of a never-used key's creation (it answers with its coverage start) or revocation."""
        reg = key.registry
        if not self.config.enabled or reg.first_seen_ms is not None:
            return None
        if event.type == "apiKey.created" and reg.status == "active" and reg.created_ms is not None:
            return [Forward.to_tenant(key.tenant, CREATED, {"key": key.key_id, "created": reg.created_ms}, ts_ms)]
        if event.type == "apiKey.revoked":
            return [Forward.to_tenant(key.tenant, GONE, {"key": key.key_id}, ts_ms)]
        return None

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Clear the unused flag, keep a tick pending; the first request ever starts the tenant's coverage."""
        if NAME not in key.ticks and key.registry.status != "revoked" and self.config.enabled:
            key.ask_tick(NAME, ts_ms + self._idle_ms)
        st = key.detectors.get(NAME)
        if st is not None and st.unused:
            st.unused = False
        if key.registry.requests == 1:
            return [Forward.to_tenant(key.tenant, USED, {"key": key.key_id}, ts_ms)]
        return None

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """The tenant's coverage start (key), or a key's creation, first request or revocation (tenant)."""
        if key.is_tenant:
            return self._tenant_forward(key, forward)
        if forward.kind != COVERAGE:
            return None
        told = int(forward.payload["coverage"])
        st = self._own(key)
        if st.coverage_ms is None or told < st.coverage_ms:
            st.coverage_ms = told
        reg = key.registry
        never_used = reg.first_seen_ms is None and reg.created_ms is not None and reg.status != "revoked"
        if self.config.enabled and never_used and reg.created_ms is not None:
            key.ask_tick(NAME, max(reg.created_ms, st.coverage_ms) + self._idle_ms)
        return None

    def on_tick(self, key: KeyState, now_ms: int) -> Effects:
        """The idle clock crossed `idle_days` (or another multiple of it): the alert, and the next tick."""
        if key.is_tenant or not self.config.enabled:
            return None
        reg = key.registry
        if reg.status == "revoked":
            return None
        st = key.detectors.get(NAME)
        if reg.last_seen_ms is not None:
            start, since = reg.last_seen_ms, "last request"
        elif reg.created_ms is not None and st is not None and st.coverage_ms is not None:
            start = max(reg.created_ms, st.coverage_ms)
            since = "creation" if reg.created_ms >= st.coverage_ms else "coverage start"
        else:
            return None  # never used, and no coverage known yet: the tenant's answer asks the tick
        due = start + self._idle_ms
        if now_ms < due:
            key.ask_tick(NAME, due)
            return None
        index = (now_ms - due) // self._idle_ms
        st = self._own(key)
        if st.fired_start == start and index <= st.fired:
            key.ask_tick(NAME, due + (st.fired + 1) * self._idle_ms)
            return None
        st.fired_start, st.fired, st.unused = start, index, True
        following = due + (index + 1) * self._idle_ms
        key.ask_tick(NAME, following)
        idle_days = (now_ms - start) / DAY_MS
        used = reg.last_seen_ms is not None
        return [
            Finding(
                type=ALERT_TYPE,
                id_parts=(str(start), str(index)),
                summary=(
                    f"Key {key.key_id} ({reg.name or 'unnamed'}) has had no request for {idle_days:.0f} days"
                    f" ({'since its last request' if used else 'and was never used'}): revoke it if nothing needs it."
                ),
                evidence={
                    "idle_days": round(idle_days, 1),
                    "idle_since": format_time(start),
                    "idle_since_what": since,
                    "idle_days_limit": self.config.idle_days,
                    "last_request": None if reg.last_seen_ms is None else format_time(reg.last_seen_ms),
                    "requests_seen": reg.requests,
                    "created_at": None if reg.created_ms is None else format_time(reg.created_ms),
                    "coverage_since": None if st.coverage_ms is None else format_time(st.coverage_ms),
                    "role": reg.role,
                    "reminder": index + 1,
                    "next_reminder_after": format_time(following),
                },
            )
        ]

    # -- tenant side -------------------------------------------------------------------------------------------

    def _tenant_forward(self, tenant: KeyState, forward: Forward) -> Effects:
        kind = forward.kind
        if kind not in (CREATED, USED, GONE):
            return None
        st = self._own(tenant)
        key_id = str(forward.payload["key"])
        if kind == GONE:
            st.never_used = [entry for entry in st.never_used if entry[0] != key_id]
            return None
        if kind == CREATED:
            created = int(forward.payload["created"])
            known = st.coverage_ms
            if known is None or created < known:
                self._follow(st, key_id, created)
            if known is None:
                return None
            return [Forward(tenant.tenant, key_id, COVERAGE, {"coverage": known}, forward.ts_ms)]
        st.never_used = [entry for entry in st.never_used if entry[0] != key_id]
        start = coverage_start(forward.ts_ms)
        if st.coverage_ms is not None and start >= st.coverage_ms:
            return None
        st.coverage_ms = start
        told: Effects = [
            Forward(tenant.tenant, key, COVERAGE, {"coverage": start}, forward.ts_ms) for key, _ in st.never_used
        ]
        # Keys created at or after the coverage start no longer depend on it (a lower one changes nothing).
        st.never_used = [entry for entry in st.never_used if entry[1] < start]
        return told

    @staticmethod
    def _follow(st: UnusedState, key_id: str, created: int) -> None:
        if any(entry[0] == key_id for entry in st.never_used):
            return
        if len(st.never_used) >= MAX_NEVER_USED:
            st.dropped += 1
            return
        st.never_used.append((key_id, created))


def _build(config: UnusedConfig, context: BuildContext) -> Unused:
    return Unused(config)


SPEC: DetectorSpec[UnusedConfig, UnusedState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "low"),),
    config=UnusedConfig,
    state=UnusedState,
    build=_build,
    summary=ALERT_TYPE,
    scope="both",
)
