"""Revoked key still in use: a request for a key the portal revoked, after a grace period for propagation.

State: `RevokedUseState`, under `revoked`. One alert per suppression period (the engine's suppression, no
discriminator: per key); uses while suppressed are counted and reported in the next alert.
"""

from __future__ import annotations

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.alerts import Severity
from keywatch.contract.events import RequestRecord, format_time
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState
from keywatch.core.suppression import is_suppressed, suppression_key

NAME = "revoked"
ALERT_TYPE = "apiKey.usedAfterRevoke"


class RevokedUseState(msgspec.Struct, array_like=True, gc=False):
    """Uses of a revoked key past the grace period."""

    uses: int  # all uses past the grace period
    suppressed_uses: int  # uses while suppressed, since the last alert
    first_ms: int  # event time of the first such use
    last_ms: int  # ... and of the last


class RevokedUseConfig(BaseModel):
    """Settings of the used-after-revoke detector (`[detection.revoked]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    grace_seconds: float = Field(
        default=60.0, ge=0, description="Uses this soon after revocation are in-flight requests, not alerts."
    )
    suppress_seconds: int = Field(
        default=3600, ge=0, description="At most one alert per key per this period; later uses are counted."
    )
    severity: Severity = Field(default="high", description="Severity when the gateway rejected the request.")
    accepted_severity: Severity = Field(
        default="critical", description="Severity when the gateway answered < 400: the revocation did not take."
    )


def _iso(ms: int) -> str:
    return format_time(ms)


class RevokedUse(Detector[RevokedUseState]):
    """Alerts when a revoked key keeps being used after the grace period."""

    def __init__(self, config: RevokedUseConfig) -> None:
        self.config = config
        self._grace_ms = int(config.grace_seconds * 1000)

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Find (once per suppression period) a use of a revoked key past the grace period."""
        reg = key.registry
        if reg.status != "revoked" or reg.revoked_ms is None or not self.config.enabled:
            return None
        if ts_ms - reg.revoked_ms <= self._grace_ms:
            return None
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = RevokedUseState(0, 0, ts_ms, ts_ms)
        st.uses += 1
        st.first_ms, st.last_ms = min(st.first_ms, ts_ms), max(st.last_ms, ts_ms)
        if is_suppressed(key, suppression_key(ALERT_TYPE), ts_ms):
            st.suppressed_uses += 1
            return None
        suppressed, st.suppressed_uses = st.suppressed_uses, 0
        accepted = record.status < 400
        since = round((ts_ms - reg.revoked_ms) / 1000.0, 3)
        return [
            Finding(
                type=ALERT_TYPE,
                id_parts=(str(reg.revoked_ms), str(ts_ms), record.ip),
                suppress_for_ms=self.config.suppress_seconds * 1000,
                severity=self.config.accepted_severity if accepted else self.config.severity,
                summary=(
                    f"Revoked key {record.key_id} was used {since:.0f} s after its revocation from {record.ip}"
                    f" ({record.method} {record.path.split('?', 1)[0][:96]} -> {record.status})."
                ),
                evidence={
                    "revoked_at": _iso(reg.revoked_ms),
                    "revoked_by": reg.revoked_by,
                    "seconds_since_revoke": since,
                    "ip": record.ip,
                    "method": record.method,
                    "path": record.path.split("?", 1)[0],
                    "status": record.status,
                    "accepted": accepted,
                    "uses_after_revoke": st.uses,
                    "suppressed_since_last_alert": suppressed,
                    "first_use_after_revoke": _iso(st.first_ms),
                    "replaced_by": reg.replaced_by,
                },
            )
        ]


def _build(config: RevokedUseConfig, context: BuildContext) -> RevokedUse:
    return RevokedUse(config)


SPEC: DetectorSpec[RevokedUseConfig, RevokedUseState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "high"),),
    config=RevokedUseConfig,
    state=RevokedUseState,
    build=_build,
    summary=ALERT_TYPE,
)
