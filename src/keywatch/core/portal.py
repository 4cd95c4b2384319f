"""Key managed outside the portal: a lifecycle event made through another channel than the portal (the API, a
script) or without MFA (`apiKey.managedOutsidePortal`). Keys are managed only in the portal, by a Tenant Admin,
with MFA — precisely so that a stolen key or session cannot mint keys, widen a scope or rotate a key.

Only what the event says counts: an event without `channel` or `mfa` (older audit records) never fires. One
alert per event, its id from the event (like the lifecycle alerts). No state.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import LifecycleEvent
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "portal"
ALERT_TYPE = "apiKey.managedOutsidePortal"
_OPERATIONS = {"apiKey.created": "created", "apiKey.scopeChanged": "re-scoped", "apiKey.revoked": "revoked"}


class PortalConfig(BaseModel):
    """Settings of the managed-outside-the-portal detector (`[detection.portal]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    portal_channels: tuple[str, ...] = Field(
        default=("portal",),
        min_length=1,
        max_length=16,
        description="The `channel` values that are the portal (compared case-insensitively).",
    )
    require_mfa: bool = Field(default=True, description="An event with `mfa` false fires.")


class Portal(Detector[None]):
    """Alerts on every lifecycle event made outside the portal or without MFA."""

    def __init__(self, config: PortalConfig) -> None:
        self.config = config
        self._portal = frozenset(c.strip().lower() for c in config.portal_channels)

    def on_lifecycle(self, key: KeyState, event: LifecycleEvent, ts_ms: int) -> Effects:
        """One finding when the event's channel is not the portal or its MFA flag is false."""
        if not self.config.enabled:
            return None
        outside = event.channel is not None and event.channel.strip().lower() not in self._portal
        no_mfa = self.config.require_mfa and event.mfa is False
        if not (outside or no_mfa):
            return None
        reasons = [f"channel {event.channel!r}"] if outside else []
        reasons += ["without MFA"] if no_mfa else []
        what = _OPERATIONS.get(event.type, event.type)
        return [
            Finding(
                type=ALERT_TYPE,
                id_parts=(str(ts_ms), event.actor),
                summary=(
                    f"Key {event.key_id} ({event.name!r}) was {what} by {event.actor} outside the portal's rules: "
                    f"{' and '.join(reasons)}."
                ),
                evidence={
                    "operation": event.type,
                    "channel": event.channel,
                    "mfa": event.mfa,
                    "reasons": reasons,
                    "actor": event.actor,
                    "actor_ip": event.ip,
                    "role": event.role,
                    "name": event.name,
                    "replaces_key_id": event.replaces_key_id,
                },
            )
        ]


def _build(config: PortalConfig, context: BuildContext) -> Portal:
    return Portal(config)


SPEC: DetectorSpec[PortalConfig, None] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "critical"),),
    config=PortalConfig,
    state=None,
    build=_build,
    summary=ALERT_TYPE,
)
