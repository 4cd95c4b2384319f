"""What keywatch remembers about one key (or one tenant): compact, bounded, typed; encoded by `core.codec`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import msgspec

KeyStatus = Literal["active", "revoked", "unknown"]

# The table key of a tenant's own state is `<tenant>/` (an empty key id): identifiers are never empty, so it
# cannot collide with a key's `<tenant>/<key_id>`, and it is partitioned by that key like any other.
TENANT_KEY_ID = ""


class KeyRegistryEntry(msgspec.Struct, array_like=True, gc=False):
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
    hygiene: int = 0  # keywatch.core.hygiene's status bits, written by the worker with the state (for gauges)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRegistryEntry:
        """From the dict form of the first state format; unknown fields are ignored."""
        return cls(**{k: v for k, v in data.items() if k in _REGISTRY_FIELDS})


_REGISTRY_FIELDS = frozenset(KeyRegistryEntry.__struct_fields__)


@dataclass(slots=True)
class KeyState:
    """Everything kept per `<tenant>/<key_id>` (or per tenant, `key_id` empty).

    The engine owns `registry`, `suppressed`, `episodes` and `ticks`; each detector owns its slot of
    `detectors` (its typed state, under its name).
    """

    tenant: str
    key_id: str
    registry: KeyRegistryEntry = field(default_factory=KeyRegistryEntry)
    # detector name -> that detector's typed state
    detectors: dict[str, Any] = field(default_factory=dict)
    # "<detector>|<discriminator>" -> event time (ms) until which that detector's findings stay quiet
    suppressed: dict[str, int] = field(default_factory=dict)
    # "<detector>|<discriminator>" -> id parts of the open episode
    episodes: dict[str, list[str]] = field(default_factory=dict)
    # detector name -> event time (ms) of the tick it asked for
    ticks: dict[str, int] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        """`<tenant>/<key_id>` (`<tenant>/` for the tenant's state): the table and Kafka key."""
        return f"{self.tenant}/{self.key_id}"

    @property
    def is_tenant(self) -> bool:
        """Whether this is a tenant's state rather than a key's."""
        return self.key_id == TENANT_KEY_ID

    def ask_tick(self, detector: str, at_ms: int) -> None:
        """Have `detector`'s `on_tick` called at event time `at_ms` (the earlier one if it already asked)."""
        current = self.ticks.get(detector)
        if current is None or at_ms < current:
            self.ticks[detector] = at_ms

    def next_tick(self) -> int | None:
        """When the earliest tick of this state is due (None without ticks)."""
        return min(self.ticks.values()) if self.ticks else None

    def as_plain(self) -> dict[str, Any]:
        """A readable dict, for debugging and tests."""
        plain = asdict(self)
        plain["registry"] = msgspec.structs.asdict(self.registry)
        plain["detectors"] = msgspec.to_builtins(self.detectors)
        return plain
