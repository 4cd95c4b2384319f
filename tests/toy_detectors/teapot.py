"""A toy detector pair, written only here, that uses every hook of the detector API.

`teapot` (key scope): a 418 answer opens an episode that a tick closes `close_after_seconds` later; a 402 answer
is found at most once per `suppress_seconds`; every 401 is forwarded to the tenant's state.
`teapot_tenant` (tenant scope): counts the distinct keys of a tenant that got a 401 in a window started by the
first of them; at `min_keys` keys it finds a tenant alert; a tick at the window's end forgets the window.
"""

from __future__ import annotations

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import RequestRecord
from keywatch.core.engine import Forward
from keywatch.core.spec import AlertSpec, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState
from keywatch.core.suppression import suppression_key

TEAPOT = "apiKey.teapot"
PAYMENT = "apiKey.paymentRequired"
MANY_KEYS = "tenant.manyKeysFailing"
FAILED = "teapot.failed"

DOCS = """
## teapot

`apiKey.teapot` - the key got a 418; the episode resolves `close_after_seconds` later (`[detection.teapot]`).

**Triage**: which client asked for coffee. **What to do**: point it at a coffee pot.

## paymentrequired

`apiKey.paymentRequired` - the key got a 402, at most once per `suppress_seconds` (`[detection.teapot]`).

**Triage**: is the tenant's plan paid. **What to do**: ask the tenant to pay.

## manykeysfailing

`tenant.manyKeysFailing` - `min_keys` keys of one tenant got a 401 within `window_seconds`
(`[detection.teapot_tenant]`).

**Triage**: did the tenant rotate its keys at once. **What to do**: ask the tenant's admin.
"""


class TeapotConfig(BaseModel):
    """Settings of the toy key detector (`[detection.teapot]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    close_after_seconds: int = Field(default=120, ge=1)
    suppress_seconds: int = Field(default=600, ge=0)


class TeapotState(msgspec.Struct, array_like=True):
    """418s seen by a key."""

    teapots: int = 0


class Teapot(Detector[TeapotState]):
    """The key-scoped toy."""

    def __init__(self, config: TeapotConfig) -> None:
        self.config = config

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """418: open an episode and ask for the tick that closes it; 402: a suppressed finding; 401: tell the
        tenant."""
        if record.status == 401:
            return [Forward.to_tenant(key.tenant, FAILED, {"key_id": key.key_id}, ts_ms)]
        if record.status == 402:
            return [Finding(PAYMENT, "Payment required.", {}, suppress_for_ms=self.config.suppress_seconds * 1000)]
        if record.status != 418:
            return None
        st = self.state(key) or key.detectors.setdefault(self.name, TeapotState())
        st.teapots += 1
        if suppression_key(TEAPOT) not in key.episodes:
            key.ask_tick(self.name, ts_ms + self.config.close_after_seconds * 1000)
        return [Finding(TEAPOT, "A teapot.", {"teapots": st.teapots}, episode="open", id_parts=(str(ts_ms),))]

    def on_tick(self, key: KeyState, now_ms: int) -> Effects:
        """Close the teapot episode."""
        return [Finding(TEAPOT, "No more teapots.", {"closed_at": now_ms}, episode="close")]


class TenantConfig(BaseModel):
    """Settings of the toy tenant detector (`[detection.teapot_tenant]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_keys: int = Field(default=3, ge=1)
    window_seconds: int = Field(default=300, ge=1)


class TenantFailures(msgspec.Struct, array_like=True):
    """The keys of a tenant that got a 401 in the current window."""

    window_start_ms: int
    keys: list[str]


class TeapotTenant(Detector[TenantFailures]):
    """The tenant-scoped toy."""

    def __init__(self, config: TenantConfig) -> None:
        self.config = config

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """Count a failing key; find the tenant once `min_keys` keys failed in the window."""
        if forward.kind != FAILED:
            return None
        st = self.state(key)
        if st is None:
            st = key.detectors[self.name] = TenantFailures(forward.ts_ms, [])
            key.ask_tick(self.name, forward.ts_ms + self.config.window_seconds * 1000)
        failing = str(forward.payload["key_id"])
        if failing in st.keys:
            return None
        st.keys.append(failing)
        if len(st.keys) != self.config.min_keys:
            return None
        return [
            Finding(
                MANY_KEYS,
                f"{len(st.keys)} keys of {key.tenant} got 401s.",
                {"keys": sorted(st.keys)},
                id_parts=(str(st.window_start_ms),),
            )
        ]

    def on_tick(self, key: KeyState, now_ms: int) -> Effects:
        """The window is over: forget it."""
        key.detectors.pop(self.name, None)
        return None


SPEC: DetectorSpec[TeapotConfig, TeapotState] = DetectorSpec(
    name="teapot",
    alerts=(AlertSpec(TEAPOT, "low"), AlertSpec(PAYMENT, "info")),
    config=TeapotConfig,
    state=TeapotState,
    build=lambda config, context: Teapot(config),
)
TENANT_SPEC: DetectorSpec[TenantConfig, TenantFailures] = DetectorSpec(
    name="teapot_tenant",
    alerts=(AlertSpec(MANY_KEYS, "high"),),
    config=TenantConfig,
    state=TenantFailures,
    build=lambda config, context: TeapotTenant(config),
    scope="tenant",
)
