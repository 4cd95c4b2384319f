"""Privilege escalation: a key given more privilege than it had — a `scopeChanged` to a role that ranks above
the previous one, or a rotation whose new key ranks above the key it replaces (`apiKey.privilegeEscalated`).

Ranks come from `[detection.roles]` or the role's name (`keywatch.core.roles`).

Scope changes are decided by event time: the key keeps its last `MAX_ROLES` roles with their times
(`PrivilegeState`), the previous role of a change is the one in force just before it, and an event that
arrives late (earlier in event time than one already seen) re-decides the change that follows it, which then
fires with that change's own id and time — so replay (event-time order) and the worker (arrival order) agree,
except that an alert already raised is never taken back: a late event that turns a change seen as an
escalation into none leaves that alert standing (lifecycle events of one key come from one audit log, in
order, so this needs a producer that reorders a key's events).

Rotations: the replaced key's role lives in the replaced key's state, perhaps on another partition. The key
registry's `rotated` hand-off to the replaced key carries the new key's role and who made it; the replaced key
answers the new key with its own role at that time (`REPLACED`), and the new key decides. The alert's time and
id come from the new key's creation event. If the replaced key's role is unknown to keywatch (its creation
never seen), nothing is decided.
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import LifecycleEvent, format_time
from keywatch.core.engine import Forward
from keywatch.core.registry import ROTATED
from keywatch.core.roles import RoleRanks
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "privilege"
ALERT_TYPE = "apiKey.privilegeEscalated"
REPLACED = "privilege.replaced"  # replaced key -> new key: "I had role X when you replaced me"
MAX_ROLES = 8  # roles (with their times) kept per key
MAX_ACTOR = 200  # characters of an actor kept


class RoleAt(msgspec.Struct, array_like=True, gc=False):
    """A role the key got at an event time, and from whom."""

    ms: int
    role: str
    actor: str
    changed: bool  # a scopeChanged (False: the creation)


class PrivilegeState(msgspec.Struct, array_like=True, gc=False):
    """The key's last roles, in event-time order."""

    roles: list[RoleAt] = []


class PrivilegeConfig(BaseModel):
    """Settings of the privilege-escalation detector (`[detection.privilege]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    rotations: bool = Field(
        default=True, description="Also compare a rotation's new key with the key it replaces (not only scopeChanged)."
    )


class Privilege(Detector[PrivilegeState]):
    """Alerts when a key's role ranks above the one it had (a scope change) or above the key it replaces."""

    def __init__(self, config: PrivilegeConfig, ranks: RoleRanks) -> None:
        self.config = config
        self.ranks = ranks

    # -- scope changes -----------------------------------------------------------------------------------

    def on_lifecycle(self, key: KeyState, event: LifecycleEvent, ts_ms: int) -> Effects:
        """Remember the role a creation or scope change gives; decide the change (and the one after it)."""
        if event.type == "apiKey.revoked" or not self.config.enabled:
            return None
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = PrivilegeState()
            reg = key.registry
            if event.type == "apiKey.scopeChanged" and reg.previous_role is not None and reg.role_changed_ms == ts_ms:
                # Older than this detector's state: the role the registry knew before this change.
                st.roles.append(RoleAt(-1, reg.previous_role, "", False))
        entry = RoleAt(ts_ms, event.role, event.actor[:MAX_ACTOR], event.type == "apiKey.scopeChanged")
        roles = st.roles
        if any(r.ms == entry.ms and r.role == entry.role for r in roles):  # the same event again
            at = next(i for i, r in enumerate(roles) if r.ms == entry.ms and r.role == entry.role)
        else:
            at = sum(1 for r in roles if r.ms <= entry.ms)
            roles.insert(at, entry)
            if len(roles) > MAX_ROLES:
                del roles[0]
                at -= 1
                if at < 0:  # older than every role kept: nothing to decide
                    return None
        effects: list[Finding | Forward] = []
        if entry.changed and at > 0:
            effects += self._decide(key, roles[at - 1], entry, event)
        nxt = at + 1
        if nxt < len(roles) and roles[nxt].changed:
            # A late event: the change after it now follows this role (re-decided; it may fire now).
            effects += self._decide(key, entry, roles[nxt], None, before=roles[at - 1] if at > 0 else None)
        return effects or None

    def _decide(
        self,
        key: KeyState,
        previous: RoleAt,
        change: RoleAt,
        event: LifecycleEvent | None,
        before: RoleAt | None = None,
    ) -> list[Finding | Forward]:
        old, new = self.ranks.rank(previous.role), self.ranks.rank(change.role)
        if new <= old:
            return []
        if before is not None and new > self.ranks.rank(before.role):
            return []  # it was an escalation already before this late event: it fired then
        evidence: dict[str, Any] = {
            "how": "scopeChanged",
            "previous_role": previous.role,
            "previous_rank": old,
            "new_role": change.role,
            "new_rank": new,
            "changed_at": format_time(change.ms),
            "actor": change.actor,
            "actor_ip": event.ip if event is not None else None,
            "channel": event.channel if event is not None else None,
            "mfa": event.mfa if event is not None else None,
            "replaces_key_id": None,
        }
        summary = (
            f"Role of key {key.key_id} was widened from {previous.role} (rank {old}) to {change.role} (rank {new})"
            f" by {change.actor}."
        )
        return [
            Finding(
                type=ALERT_TYPE,
                id_parts=("scope", str(change.ms), change.role),
                summary=summary,
                evidence=evidence,
                time_ms=change.ms,
            )
        ]

    # -- rotations ---------------------------------------------------------------------------------------

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """`rotated` (this key was replaced): answer the new key with this key's role then. `privilege.replaced`
        (this key is the new one): fire when its role ranks above the replaced key's."""
        if not (self.config.enabled and self.config.rotations):
            return None
        payload = forward.payload
        if forward.kind == ROTATED:
            role = self._role_at(key, forward.ts_ms)
            if role is None or not isinstance(payload.get("role"), str):
                return None  # the replaced key's role is unknown (or a hand-off from before roles rode along)
            answer = {**payload, "replaced_key_id": key.key_id, "replaced_role": role}
            return [Forward(key.tenant, str(payload["replaced_by"]), REPLACED, answer, forward.ts_ms)]
        if forward.kind == REPLACED:
            return self._rotation(key, forward)
        return None

    def _role_at(self, key: KeyState, at_ms: int) -> str | None:
        st = self.state(key)
        if st is not None:
            known = [r for r in st.roles if r.ms <= at_ms]
            if known:
                return known[-1].role
        return key.registry.role

    def _rotation(self, key: KeyState, forward: Forward) -> Effects:
        payload = forward.payload
        old_role, new_role = str(payload["replaced_role"]), str(payload["role"])
        old, new = self.ranks.rank(old_role), self.ranks.rank(new_role)
        if new <= old:
            return None
        actor, replaced = str(payload.get("actor") or ""), str(payload["replaced_key_id"])
        evidence: dict[str, Any] = {
            "how": "rotation",
            "previous_role": old_role,
            "previous_rank": old,
            "new_role": new_role,
            "new_rank": new,
            "changed_at": format_time(forward.ts_ms),
            "actor": actor,
            "actor_ip": payload.get("actor_ip"),
            "channel": payload.get("channel"),
            "mfa": payload.get("mfa"),
            "replaces_key_id": replaced,
        }
        summary = (
            f"Key {key.key_id} was created by {actor} as a rotation of {replaced} with a wider role: "
            f"{new_role} (rank {new}) instead of {old_role} (rank {old})."
        )
        return [
            Finding(
                type=ALERT_TYPE,
                id_parts=("rotation", str(forward.ts_ms), actor),
                summary=summary,
                evidence=evidence,
                time_ms=forward.ts_ms,
            )
        ]


def _build(config: PrivilegeConfig, context: BuildContext) -> Privilege:
    return Privilege(config, RoleRanks(context.roles))


SPEC: DetectorSpec[PrivilegeConfig, PrivilegeState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "high"),),
    config=PrivilegeConfig,
    state=PrivilegeState,
    build=_build,
    summary=ALERT_TYPE,
)
