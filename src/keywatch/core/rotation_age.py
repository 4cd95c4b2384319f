"""Rotation overdue: an active key older than `max_age_days` since its creation event is still used, and no
rotation has started (no key was created with `replaces_key_id` = it).

Reminders come in slots: slot k starts `max_age_days + k * repeat_days` after the creation. A slot's alert
fires at its start (a tick) when the key had a request in the `repeat_days` before it, else at the key's
first request within the slot; one alert per slot ("used" = a request within the repeat period). Its id is
the key, the age threshold crossed (creation + max age) and the slot index, never the arrival order.

A rotation counts once its replacement key has existed for `ROTATION_GRACE_MS` (a day) at the decision's
event time: the `rotated` hand-off travels through Kafka in the worker and may reach the old key after some of
its later requests or ticks (seconds when live, longer while partitions catch up on a backlog at different
speeds); replay applies it at once. A decision made with facts a day old is the same in both. A key whose
creation keywatch never saw is never overdue.

State: `RotationAgeState`, under `rotation_age`, only for keys that alerted or were rotated (two ints).
"""

from __future__ import annotations

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import LifecycleEvent, RequestRecord, format_time
from keywatch.core import hygiene
from keywatch.core.engine import Forward
from keywatch.core.registry import ROTATED
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "rotation_age"
ALERT_TYPE = "apiKey.rotationOverdue"
DAY_MS = 86_400_000
ROTATION_GRACE_MS = DAY_MS  # a replacement counts as a started rotation from a day after its creation


class RotationAgeState(msgspec.Struct, array_like=True, gc=False):
    """The last reminder slot alerted, and when the key's replacement was created."""

    fired: int = -1  # index of the last slot that alerted (-1: none yet)
    rotation_ms: int | None = None  # creation time of the first key created with replaces_key_id = this key


class RotationAgeConfig(BaseModel):
    """Settings of the rotation-age detector (`[detection.rotation_age]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    max_age_days: float = Field(
        default=90.0, gt=0, description="A key older than this since its creation event should have been rotated."
    )
    repeat_days: float = Field(
        default=7.0, gt=0, description="Remind again after this long while the key stays overdue and in use."
    )


def is_overdue(key: KeyState) -> bool:
    """Whether the key is overdue for rotation: from its first `apiKey.rotationOverdue` until a rotation starts
    or the key is revoked (for the hygiene gauges)."""
    st: RotationAgeState | None = key.detectors.get(NAME)
    if st is None or st.fired < 0:
        return False
    reg = key.registry
    return reg.status != "revoked" and reg.replaced_by is None and st.rotation_ms is None


hygiene.register("overdue", is_overdue)


class RotationAge(Detector[RotationAgeState]):
    """Reminds, every `repeat_days`, that a key past its maximum age is still in use and not being rotated."""

    def __init__(self, config: RotationAgeConfig) -> None:
        self.config = config
        self._age_ms = int(config.max_age_days * DAY_MS)
        self._repeat_ms = max(1, int(config.repeat_days * DAY_MS))

    def _blocked(self, key: KeyState, at_ms: int) -> bool:
        """Revoked, or a rotation started (its replacement existed a day before `at_ms`)."""
        reg = key.registry
        if reg.status == "revoked":
            return True
        st = self.state(key)
        if st is not None and st.rotation_ms is not None:
            return st.rotation_ms <= at_ms - ROTATION_GRACE_MS
        return reg.replaced_by is not None  # rotated before this detector kept the time

    def on_lifecycle(self, key: KeyState, event: LifecycleEvent, ts_ms: int) -> Effects:
        """A creation: ask a tick for the day the key reaches its maximum age."""
        created = key.registry.created_ms
        if self.config.enabled and event.type == "apiKey.created" and created is not None:
            key.ask_tick(NAME, created + self._age_ms)
        return None

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """`rotated`: remember when the replacement was created (the earliest one)."""
        if forward.kind == ROTATED:
            st = self.state(key)
            if st is None:
                st = key.detectors[NAME] = RotationAgeState()
            if st.rotation_ms is None or forward.ts_ms < st.rotation_ms:
                st.rotation_ms = forward.ts_ms
        return None

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """A request in a reminder slot that has not alerted yet: the slot's alert, at this request."""
        created = key.registry.created_ms
        if created is None or not self.config.enabled:
            return None
        due = created + self._age_ms
        if ts_ms < due:
            return None
        slot = (ts_ms - due) // self._repeat_ms
        st = self.state(key)
        if (st is not None and slot <= st.fired) or self._blocked(key, ts_ms):
            return None
        return [self._fire(key, ts_ms, due, slot)]

    def on_tick(self, key: KeyState, now_ms: int) -> Effects:
        """A slot starts: its alert if the key was used within the repeat period before it."""
        created = key.registry.created_ms
        if created is None or not self.config.enabled or self._blocked(key, now_ms):
            return None
        due = created + self._age_ms
        if now_ms < due:
            key.ask_tick(NAME, due)
            return None
        slot = (now_ms - due) // self._repeat_ms
        st = self.state(key)
        if st is not None and slot <= st.fired:
            key.ask_tick(NAME, due + (st.fired + 1) * self._repeat_ms)
            return None
        last = key.registry.last_seen_ms
        if last is None or last <= now_ms - self._repeat_ms:
            return None  # not used lately: the key's next request fires the slot
        return [self._fire(key, now_ms, due, slot)]

    def _fire(self, key: KeyState, at_ms: int, due: int, slot: int) -> Finding:
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = RotationAgeState()
        st.fired = slot
        following = due + (slot + 1) * self._repeat_ms
        key.ask_tick(NAME, following)
        reg = key.registry
        created = reg.created_ms if reg.created_ms is not None else due - self._age_ms
        age_days = (at_ms - created) / DAY_MS
        max_age = self.config.max_age_days
        return Finding(
            type=ALERT_TYPE,
            id_parts=(str(due), str(slot)),
            severity="medium" if age_days >= 2 * max_age else "low",
            summary=(
                f"Key {key.key_id} ({reg.name or 'unnamed'}) is {age_days:.0f} days old, past the {max_age:g}-day "
                "rotation limit, and still in use: no rotation has started."
            ),
            evidence={
                "created_at": format_time(created),
                "created_by": reg.created_by,
                "age_days": round(age_days, 1),
                "max_age_days": max_age,
                "overdue_days": round((at_ms - due) / DAY_MS, 1),
                "last_request": None if reg.last_seen_ms is None else format_time(reg.last_seen_ms),
                "requests_seen": reg.requests,
                "role": reg.role,
                "reminder": slot + 1,
                "next_reminder_after": format_time(following),
            },
        )


def _build(config: RotationAgeConfig, context: BuildContext) -> RotationAge:
    return RotationAge(config)


SPEC: DetectorSpec[RotationAgeConfig, RotationAgeState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "low"),),
    config=RotationAgeConfig,
    state=RotationAgeState,
    build=_build,
    summary=ALERT_TYPE,
)
