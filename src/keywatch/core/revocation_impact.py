"""Revoked while in use: at its revocation the key had >= `min_requests` requests in the `window_minutes` before
it — services that will now fail (`apiKey.revokedWhileInUse`, subject the revoked key).

Requests are counted per minute in a small ring (the last `window_minutes` + `RING_SLACK` minutes, O(1) per
request). The decision is an event-time tick at the revocation time, counting the `window_minutes` whole minutes
before the revocation's minute (so no request at or after it is ever counted, whatever the order records come
in). It is monotone: a record up to the lateness late that brings the count to the threshold after the tick
ran fires it then, with the tick's time and id — the worker and replay give the same ids.

Evidence samples the networks, user agents and paths of the first request of each minute (at most `MAX_NETS`,
`MAX_AGENTS`, `MAX_PATHS`, the least recently sampled dropped; those sampled in the window are reported, most
recent first; paths without query, at most `PATH_CHARS` characters; a sample of a minute the ring no longer
holds is dropped at the next sampled request, so the evidence describes the minutes counted), and names
the replacement key (registry `replaced_by`) and whether it serves those networks, from what the replacement
told the key's rotation state (`keywatch.core.rotation`), or "unknown".

State: `RevocationState`, under `revocation_impact`, for every key with requests (tens of bytes plus the
samples).
"""

from __future__ import annotations

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import LifecycleEvent, RequestRecord, format_time
from keywatch.core import rotation
from keywatch.core.ip_baseline import range_of
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "revocation_impact"
ALERT_TYPE = "apiKey.revokedWhileInUse"
MINUTE_MS = 60_000
RING_SLACK = 8  # minutes kept past the window: records come up to the lateness (5 min) out of order
MAX_NETS = 3
MAX_AGENTS = 2
MAX_PATHS = 3
AGENT_CHARS = 64
PATH_CHARS = 96


class RevocationState(msgspec.Struct, array_like=True, gc=False):
    """A key's requests per minute over the last minutes, a sample of who sent them, and its revocation."""

    minute: int  # newest minute counted
    counts: list[int]  # requests per minute, slot minute % len(counts)
    nets: dict[str, int] = {}  # sampled network -> the last minute it was sampled
    agents: dict[str, int] = {}
    paths: dict[str, int] = {}
    revoked_ms: int | None = None  # the revocation being decided
    checked: bool = False  # its tick ran
    fired: bool = False


class RevocationImpactConfig(BaseModel):
    """Settings of the revoked-while-in-use detector (`[detection.revocation_impact]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    min_requests: int = Field(
        default=5, ge=1, description="Requests in the window before the revocation that make it 'in use'."
    )
    window_minutes: int = Field(
        default=15, ge=1, le=120, description="Whole minutes before the revocation's minute that are counted."
    )


def _sample(table: dict[str, int], value: str, minute: int, cap: int) -> None:
    table[value] = minute
    if len(table) > cap:
        del table[min(table, key=lambda k: (table[k], k))]


def _recent(table: dict[str, int], since: int) -> list[str]:
    """The sampled values seen at or after minute `since`, most recent first."""
    return sorted((v for v, m in table.items() if m >= since), key=lambda v: (-table[v], v))


class RevocationImpact(Detector[RevocationState]):
    """Finds revocations of keys that were still serving requests."""

    def __init__(self, config: RevocationImpactConfig) -> None:
        self.config = config
        self._ring = config.window_minutes + RING_SLACK

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Count the request in its minute; sample the first request of each minute."""
        if not self.config.enabled:
            return None
        minute = ts_ms // MINUTE_MS
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = RevocationState(minute, [0] * self._ring)
            self._note(st, record, minute)
        counts = st.counts
        size = len(counts)
        if minute > st.minute:
            for m in range(max(st.minute + 1, minute - size + 1), minute + 1):
                counts[m % size] = 0
            st.minute = minute
            self._note(st, record, minute)
        elif st.minute - minute >= size:
            return None
        counts[minute % size] += 1
        if st.checked and not st.fired and st.revoked_ms is not None and ts_ms < st.revoked_ms:
            return self._decide(key, st)  # a late record may bring the window to the threshold
        return None

    @staticmethod
    def _note(st: RevocationState, record: RequestRecord, minute: int) -> None:
        oldest = minute - len(st.counts) + 1  # samples only of minutes the ring holds: the evidence of what is counted
        for table in (st.nets, st.agents, st.paths):
            for value in [v for v, m in table.items() if m < oldest]:
                del table[value]
        _sample(st.nets, range_of(record.ip), minute, MAX_NETS)
        if record.user_agent:
            _sample(st.agents, record.user_agent[:AGENT_CHARS], minute, MAX_AGENTS)
        _sample(st.paths, record.path.split("?", 1)[0][:PATH_CHARS], minute, MAX_PATHS)

    def on_lifecycle(self, key: KeyState, event: LifecycleEvent, ts_ms: int) -> Effects:
        """The key's (first) revocation: decide at a tick at its time, once the records before it are in."""
        if event.type != "apiKey.revoked" or not self.config.enabled:
            return None
        st = self.state(key)
        if st is None or key.registry.revoked_ms != ts_ms or st.revoked_ms == ts_ms:
            return None  # never used, a repeated revocation, or this one again
        st.revoked_ms, st.checked, st.fired = ts_ms, False, False
        key.ask_tick(NAME, ts_ms)
        return None

    def on_tick(self, key: KeyState, now_ms: int) -> Effects:
        """The revocation's tick: decide."""
        st = self.state(key)
        if st is None or st.revoked_ms is None or st.checked:
            return None
        st.checked = True
        return self._decide(key, st)

    def window_count(self, st: RevocationState, revoked_ms: int) -> tuple[int, list[int]]:
        """Requests in the `window_minutes` whole minutes before the revocation's minute, and per minute."""
        last = revoked_ms // MINUTE_MS - 1
        size = len(st.counts)
        per_minute = []
        for m in range(last - self.config.window_minutes + 1, last + 1):
            held = st.minute - size < m <= st.minute
            per_minute.append(st.counts[m % size] if held else 0)
        return sum(per_minute), per_minute

    def _decide(self, key: KeyState, st: RevocationState) -> Effects:
        revoked = st.revoked_ms
        assert revoked is not None
        count, per_minute = self.window_count(st, revoked)
        if count < self.config.min_requests:
            return None
        st.fired = True
        reg = key.registry
        replacement = reg.replaced_by
        since = revoked // MINUTE_MS - self.config.window_minutes
        nets, agents, paths = _recent(st.nets, since), _recent(st.agents, since), _recent(st.paths, since)
        serves, new_nets = _replacement_serves(key, replacement, nets)
        cfg = self.config
        busiest = max(per_minute)
        last_active = max((i for i, n in enumerate(per_minute) if n), default=0)
        minutes_before = cfg.window_minutes - last_active
        instead = f"; its replacement {replacement} serves those networks: {serves}" if replacement else ""
        return [
            Finding(
                type=ALERT_TYPE,
                id_parts=(str(revoked),),
                time_ms=revoked,
                summary=(
                    f"Key {key.key_id} was revoked while in use: {count} requests in the {cfg.window_minutes} min "
                    f"before, from {len(nets)} network(s){instead}."
                ),
                evidence={
                    "revoked_at": format_time(revoked),
                    "revoked_by": reg.revoked_by,
                    "requests_in_window": count,
                    "window_minutes": cfg.window_minutes,
                    "min_requests": cfg.min_requests,
                    "busiest_minute_requests": busiest,
                    "last_request_minutes_before": minutes_before,
                    "requests_per_minute": per_minute,
                    "networks": nets,
                    "user_agents": agents,
                    "top_paths": paths,
                    "replacement_key_id": replacement,
                    "replacement_serves_networks": serves,
                    "replacement_networks": new_nets,
                },
            )
        ]


def _replacement_serves(key: KeyState, replacement: str | None, nets: list[str]) -> tuple[str, list[str]]:
    """Whether the replacement key serves the networks that used the key: yes / partly / no / unknown."""
    st = key.detectors.get(rotation.NAME)
    if replacement is None or not isinstance(st, rotation.RotationState) or st.is_new or st.peer != replacement:
        return "unknown", []
    if not st.new_nets:
        return ("no" if st.new_first_ms is None else "unknown"), []
    served = [n for n in nets if n in st.new_nets]
    if not nets:
        return "unknown", list(st.new_nets)
    verdict = "yes" if len(served) == len(nets) else "partly" if served else "no"
    return verdict, list(st.new_nets)


def _build(config: RevocationImpactConfig, context: BuildContext) -> RevocationImpact:
    return RevocationImpact(config)


SPEC: DetectorSpec[RevocationImpactConfig, RevocationState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "medium"),),
    config=RevocationImpactConfig,
    state=RevocationState,
    build=_build,
    summary=ALERT_TYPE,
)
