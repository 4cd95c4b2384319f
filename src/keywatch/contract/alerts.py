"""Alerts: CloudEvents 1.0 structured JSON envelopes on the alert topic."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import Env, EventTime

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}

# Fixed namespace: alert ids are uuid5(namespace, what triggered the alert), so a re-emitted alert keeps its id.
ALERT_ID_NAMESPACE = uuid.UUID("6f1c2a8e-3d4b-5e6f-8a9b-0c1d2e3f4a5b")
# Where the triage steps live: `<base>#<anchor of the type>`. A deployment points it at its own copy of
# docs/alerts.md (KEYWATCH_RUNBOOK_BASE_URL), e.g. an internal wiki or a pinned release.
RUNBOOK_BASE = "https://github.com/keywatch/keywatch/blob/main/docs/alerts.md"


def alert_id(*parts: str) -> str:
    """A deterministic alert id from the parts that identify what triggered it."""
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, "\x1f".join(parts)))


class KeyEvent(Protocol):
    """What an alert is about: an event of one key (a request or a lifecycle event)."""

    @property
    def ts(self) -> datetime: ...
    @property
    def tenant(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def env(self) -> Env: ...


# every field is present in what keywatch emits: the serialization schemas mark defaulted fields required too
_EMITTED = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class AlertData(BaseModel):
    """The `data` member of an alert: who, how bad, what happened, and the evidence."""

    model_config = _EMITTED

    tenant: str
    key_id: str | None = Field(description="The key; null for a tenant alert (one about the tenant as a whole).")
    env: Env | None = Field(description="The key's environment; null for a tenant alert.")
    severity: Severity
    summary: str = Field(min_length=1, description="One human sentence.")
    evidence: dict[str, Any] = Field(description="Baseline vs observed values, per alert type.")
    runbook: str = Field(
        min_length=1, json_schema_extra={"format": "uri"}, description="Where the triage steps for this alert type are."
    )
    status: Literal["firing", "resolved"] = Field(
        default="firing", description="Episodes (spikes, clusters) fire once and resolve once, sharing episode_id."
    )
    episode_id: str | None = Field(
        default=None, pattern=UUID_PATTERN, description="Shared by the start and end of one episode; null otherwise."
    )


class Alert(BaseModel):
    """A keywatch alert as a CloudEvents 1.0 structured-mode JSON event."""

    model_config = _EMITTED

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(
        pattern=UUID_PATTERN, description="Deterministic from the triggering event(s): duplicates share it (a UUID)."
    )
    source: str = Field(
        min_length=1,
        json_schema_extra={"format": "uri-reference"},
        description="URI-reference of the keywatch deployment.",
    )
    type: str = Field(min_length=1, description="apiKey.created, apiKey.revoked, apiKey.usedFromNewIp, ...")
    time: EventTime = Field(description="Event time of the triggering event.")
    subject: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*(/[A-Za-z0-9][A-Za-z0-9._:\-]*)?$",
        description="<tenant>/<key_id> for a key alert, <tenant> (no '/') for a tenant alert; also the Kafka key.",
    )
    datacontenttype: Literal["application/json"] = "application/json"
    data: AlertData

    @property
    def is_tenant_alert(self) -> bool:
        """Whether the alert is about a tenant as a whole (subject `<tenant>`, no key id) rather than a key."""
        return self.data.key_id is None

    @property
    def severity(self) -> str:
        """The alert's severity."""
        return self.data.severity

    @classmethod
    def build(
        cls,
        *,
        type: str,
        id_parts: tuple[str, ...],
        source: str,
        time: datetime,
        tenant: str,
        key_id: str | None,
        env: Env | None,
        severity: Severity,
        summary: str,
        evidence: dict[str, Any],
        status: Literal["firing", "resolved"] = "firing",
        episode_id: str | None = None,
        runbook_base: str = RUNBOOK_BASE,
    ) -> Alert:
        """Build an alert whose id is derived from its type, subject and `id_parts` (`key_id` None: a tenant
        alert, subject `<tenant>`)."""
        anchor = type.split(".", 1)[-1].lower()
        return cls(
            id=alert_id(type, tenant, key_id or "", *id_parts),
            source=source,
            type=type,
            time=time,
            subject=tenant if key_id is None else f"{tenant}/{key_id}",
            data=AlertData(
                tenant=tenant,
                key_id=key_id,
                env=env,
                severity=severity,
                summary=summary,
                evidence=evidence,
                runbook=f"{runbook_base}#{anchor}",
                status=status,
                episode_id=episode_id,
            ),
        )

    @classmethod
    def about(
        cls,
        event: KeyEvent,
        *,
        type: str,
        id_parts: tuple[str, ...],
        source: str,
        severity: Severity,
        summary: str,
        evidence: dict[str, Any],
        time: datetime | None = None,
        status: Literal["firing", "resolved"] = "firing",
        episode_id: str | None = None,
        runbook_base: str = RUNBOOK_BASE,
    ) -> Alert:
        """`build` for an alert about `event`'s key, at `event`'s time unless `time` says otherwise."""
        return cls.build(
            type=type,
            id_parts=id_parts,
            source=source,
            time=event.ts if time is None else time,
            tenant=event.tenant,
            key_id=event.key_id,
            env=event.env,
            severity=severity,
            summary=summary,
            evidence=evidence,
            status=status,
            episode_id=episode_id,
        )
