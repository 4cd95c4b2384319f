"""How a detector is declared: one `DetectorSpec` (name, alert types, settings model, state type, how to build
it) and the `Finding`s its hooks return; the engine turns findings into alerts.

A detector's `name` is its one name everywhere: the `[detection.<name>]` settings section, the slot of its state
in a key's state, the `[detection.<name>]` line of its docs/alerts.md section. Hooks (all optional):

    on_request(key, record, ts_ms)     a request of the key
    on_lifecycle(key, event, ts_ms)    a lifecycle event of the key
    on_forward(key, forward)           a message from another key's (or the tenant's) processing
    on_tick(key, now_ms)               an event-time timer asked for with `KeyState.ask_tick`, at its time

Each returns None or a list of `Finding`s and `Forward`s. Key-scoped detectors see key states, tenant-scoped
ones the tenant's state (`KeyState.is_tenant`), reached only by forwards and ticks; a detector of scope "both"
sees both (its `on_forward` and `on_tick` tell them apart by `KeyState.is_tenant`): a rule decided per key with
what the tenant knows (the tenant's own state holds what its keys tell it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from keywatch.contract.alerts import Severity

if TYPE_CHECKING:
    from keywatch.contract.events import LifecycleEvent, RequestRecord
    from keywatch.core.engine import Forward
    from keywatch.core.state import KeyState
    from keywatch.core.trusted import TrustedNetworks
    from keywatch.geo import GeoLookup

Scope = Literal["key", "tenant", "both"]
EpisodeEdge = Literal["open", "close"]
StateT = TypeVar("StateT")
ConfigT = TypeVar("ConfigT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """An alert type a detector emits: its default severity and its runbook anchor in docs/alerts.md."""

    type: str
    severity: Severity

    @property
    def anchor(self) -> str:
        """The docs/alerts.md section of this type: the type after `apiKey.`, lowercased."""
        return self.type.split(".", 1)[-1].lower()


@dataclass(slots=True)
class Finding:
    """What a detector found; the engine makes it an alert (id, envelope, suppression, episodes).

    `discriminator` tells one incident of the type from another (a network, a 4xx kind): suppression and
    episodes are kept per (alert type, discriminator). `suppress_for_ms` > 0 keeps later findings under the same
    discriminator quiet for that long (a "close" is never suppressed). `episode` "open" starts an episode
    (status firing), "close" ends the open one (status resolved, same episode_id); an open while one is open,
    or a close without one, is dropped.
    `id_parts` (with the type and subject) make the alert id; a close reuses its episode's. `time_ms` overrides
    the alert time (default: the triggering event's time; a tick's time for a tick).
    """

    type: str
    summary: str
    evidence: dict[str, Any]
    severity: Severity | None = None
    id_parts: tuple[str, ...] = ()
    discriminator: str = ""
    suppress_for_ms: int = 0
    episode: EpisodeEdge | None = None
    time_ms: int | None = None


Effects = list["Finding | Forward"] | None


class Detector(Generic[StateT]):
    """Base of a configured detector: hooks that do nothing, and typed access to its slot of a key's state."""

    name: str = ""

    def state(self, key: KeyState) -> StateT | None:
        """This detector's state in `key` (None until it keeps some)."""
        found: StateT | None = key.detectors.get(self.name)
        return found

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """A request of the key, at event time `ts_ms`."""
        return None

    def on_lifecycle(self, key: KeyState, event: LifecycleEvent, ts_ms: int) -> Effects:
        """A lifecycle event of the key, at event time `ts_ms`."""
        return None

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """A message addressed to this key (or tenant) by another key's processing."""
        return None

    def on_tick(self, key: KeyState, now_ms: int) -> Effects:
        """The timer this detector asked for at `now_ms` is due."""
        return None


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a detector may need besides its settings."""

    source: str
    geo: GeoLookup | None = None
    trusted: TrustedNetworks | None = None  # the trusted lists of the keys this detector serves
    roles: tuple[tuple[str, int], ...] = ()  # `[detection.roles]`: role -> rank (keywatch.core.roles)
    allowed_lateness_ms: int = 300_000  # the engine's: how far out of event-time order records may arrive


@dataclass(frozen=True, slots=True)
class DetectorSpec(Generic[ConfigT, StateT]):
    """A detector, declared once: registered in `keywatch.core.catalog`, everything else iterates the specs."""

    name: str
    alerts: tuple[AlertSpec, ...]
    config: type[ConfigT]
    state: type[StateT] | None
    build: Callable[[ConfigT, BuildContext], Detector[StateT]]
    scope: Scope = "key"
    summary: str = ""

    def alert(self, alert_type: str) -> AlertSpec:
        """The declaration of one of this detector's alert types."""
        for spec in self.alerts:
            if spec.type == alert_type:
                return spec
        raise KeyError(f"detector {self.name!r} does not declare alert type {alert_type!r}")
