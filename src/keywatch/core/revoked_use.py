"""Revoked key still in use: a request for a key the portal revoked, after a grace period for propagation.

State (`KeyState.detectors["rev"]`): n: uses after revocation (past the grace period), q: uses suppressed since
the last alert, f / l: event times (ms) of the first and last such use.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.alerts import Alert, Severity
from keywatch.contract.events import RequestRecord
from keywatch.core.state import KeyState
from keywatch.core.suppression import DEFAULT_MAX_ENTRIES, is_suppressed, suppress, suppression_key

NAME = "rev"
ALERT_TYPE = "apiKey.usedAfterRevoke"


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
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RevokedUse:
    """Alerts when a revoked key keeps being used after the grace period."""

    name = NAME

    def __init__(self, config: RevokedUseConfig, *, source: str, max_suppressions: int = DEFAULT_MAX_ENTRIES) -> None:
        self.config = config
        self.max_suppressions = max_suppressions
        self.source = source
        self._grace_ms = int(config.grace_seconds * 1000)

    def on_request(self, state: KeyState, record: RequestRecord, ts_ms: int) -> list[Alert]:
        """Alert (once per suppression period) on a use of a revoked key past the grace period."""
        reg = state.registry
        if reg.status != "revoked" or reg.revoked_ms is None or not self.config.enabled:
            return []
        if ts_ms - reg.revoked_ms <= self._grace_ms:
            return []
        st = state.detectors.get(NAME)
        if st is None:
            st = state.detectors[NAME] = {"n": 0, "q": 0, "f": ts_ms, "l": ts_ms}
        st["n"] += 1
        st["f"], st["l"] = min(st["f"], ts_ms), max(st["l"], ts_ms)
        key = suppression_key("rev")
        if is_suppressed(state, key, ts_ms):
            st["q"] += 1
            return []
        suppressed, st["q"] = st["q"], 0
        suppress(
            state,
            key,
            now_ms=ts_ms,
            until_ms=ts_ms + self.config.suppress_seconds * 1000,
            max_entries=self.max_suppressions,
        )
        accepted = record.status < 400
        since = round((ts_ms - reg.revoked_ms) / 1000.0, 3)
        return [
            Alert.about(
                record,
                type=ALERT_TYPE,
                id_parts=(str(reg.revoked_ms), str(ts_ms), record.ip),
                source=self.source,
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
                    "uses_after_revoke": st["n"],
                    "suppressed_since_last_alert": suppressed,
                    "first_use_after_revoke": _iso(st["f"]),
                    "replaced_by": reg.replaced_by,
                },
            )
        ]
