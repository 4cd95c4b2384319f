"""What keywatch remembers about one key: compact, bounded, serialisable to a small dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

KeyStatus = Literal["active", "revoked", "unknown"]


@dataclass(slots=True)
class KeyRegistryEntry:
    """The key as the portal described it, plus when keywatch last saw it used."""

    status: KeyStatus = "unknown"  # unknown: used, but its creation was never seen
    env: str | None = None
    role: str | None = None
    name: str | None = None
    created_ms: int | None = None
    created_by: str | None = None
    revoked_ms: int | None = None
    revoked_by: str | None = None
    role_changed_ms: int | None = None
    previous_role: str | None = None
    replaces: str | None = None  # key_id this key replaced (rotation)
    replaced_by: str | None = None  # key_id that replaced this key
    first_seen_ms: int | None = None
    last_seen_ms: int | None = None
    requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Compact dict: fields at their default value are left out (in field order)."""
        # Written out rather than looped over `fields()`: this runs for every state written to the changelog.
        # tests/unit/core/test_state.py checks it against the generic form, field by field.
        out: dict[str, Any] = {}
        if self.status != "unknown":
            out["status"] = self.status
        if self.env is not None:
            out["env"] = self.env
        if self.role is not None:
            out["role"] = self.role
        if self.name is not None:
            out["name"] = self.name
        if self.created_ms is not None:
            out["created_ms"] = self.created_ms
        if self.created_by is not None:
            out["created_by"] = self.created_by
        if self.revoked_ms is not None:
            out["revoked_ms"] = self.revoked_ms
        if self.revoked_by is not None:
            out["revoked_by"] = self.revoked_by
        if self.role_changed_ms is not None:
            out["role_changed_ms"] = self.role_changed_ms
        if self.previous_role is not None:
            out["previous_role"] = self.previous_role
        if self.replaces is not None:
            out["replaces"] = self.replaces
        if self.replaced_by is not None:
            out["replaced_by"] = self.replaced_by
        if self.first_seen_ms is not None:
            out["first_seen_ms"] = self.first_seen_ms
        if self.last_seen_ms is not None:
            out["last_seen_ms"] = self.last_seen_ms
        if self.requests != 0:
            out["requests"] = self.requests
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRegistryEntry:
        """Inverse of `to_dict`; unknown fields (from a newer version) are ignored."""
        if _REGISTRY_FIELDS.issuperset(data):
            return cls(**data)
        return cls(**{k: v for k, v in data.items() if k in _REGISTRY_FIELDS})


_REGISTRY_FIELDS = frozenset(f.name for f in fields(KeyRegistryEntry))


@dataclass(slots=True)
class KeyState:
    """Everything kept per `<tenant>/<key_id>`. Detectors keep their own sub-state in `detectors`."""

    tenant: str
    key_id: str
    registry: KeyRegistryEntry = field(default_factory=KeyRegistryEntry)
    # detector name -> that detector's own compact state (plain JSON-able values)
    detectors: dict[str, Any] = field(default_factory=dict)
    # suppression key -> event time (ms) until which that alert stays quiet
    suppressed: dict[str, int] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        """`<tenant>/<key_id>`."""
        return f"{self.tenant}/{self.key_id}"

    def to_dict(self) -> dict[str, Any]:
        """Serialisable form, small enough to write to a changelog per event."""
        out: dict[str, Any] = {"t": self.tenant, "k": self.key_id, "r": self.registry.to_dict()}
        if self.detectors:
            out["d"] = self.detectors
        if self.suppressed:
            out["s"] = self.suppressed
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyState:
        """Inverse of `to_dict`. Takes ownership of `data`'s containers (a freshly decoded dict): no copies."""
        registry = data.get("r")
        detectors = data.get("d")
        suppressed = data.get("s")
        return cls(
            data["t"],
            data["k"],
            KeyRegistryEntry.from_dict(registry) if registry else KeyRegistryEntry(),
            detectors if type(detectors) is dict else dict(detectors or {}),
            suppressed if type(suppressed) is dict else dict(suppressed or {}),
        )

    def as_plain(self) -> dict[str, Any]:
        """A readable dict, for debugging and tests."""
        return asdict(self)
