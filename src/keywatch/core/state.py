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
        """Compact dict: fields at their default value are left out."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) != f.default}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRegistryEntry:
        """Inverse of `to_dict`; unknown fields (from a newer version) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
        """Inverse of `to_dict`."""
        return cls(
            tenant=data["t"],
            key_id=data["k"],
            registry=KeyRegistryEntry.from_dict(data.get("r", {})),
            detectors=dict(data.get("d", {})),
            suppressed=dict(data.get("s", {})),
        )

    def as_plain(self) -> dict[str, Any]:
        """A readable dict, for debugging and tests."""
        return asdict(self)
