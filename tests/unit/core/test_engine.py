"""The engine end to end: a mixed stream replayed twice gives the same alerts, state survives serialisation."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from coretest import HOUR, MINUTE, T0, Cluster

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.engine import DetectorSet, Engine, Forward
from keywatch.core.spec import AlertSpec, Detector, DetectorSpec, Finding
from keywatch.core.state import KeyState
from keywatch.core.suppression import DEFAULT_MAX_ENTRIES


def mixed_stream(
    request_factory: Callable[..., RequestRecord], lifecycle_factory: Callable[..., LifecycleEvent]
) -> list[Any]:
    """Two keys over a day: creation, normal use, a new IP, a 403 burst, a spike, revocation and later use."""
    rng = random.Random(11)
    events: list[Any] = [lifecycle_factory(ts=T0 - 2 * 24 * HOUR), lifecycle_factory(key_id="key-2", ts=T0 - HOUR)]
    for m in range(0, 6 * 60, 2):
        for _ in range(rng.randint(20, 30)):
            events.append(request_factory(ts=T0 + m * MINUTE + rng.randint(0, 59_999), ip="192.0.2.10"))
        events.append(request_factory(key_id="key-2", ts=T0 + m * MINUTE, ip="198.51.100.1"))
    events.append(request_factory(ts=T0 + 6 * HOUR, ip="203.0.113.99"))
    events += [request_factory(ts=T0 + 6 * HOUR + i * 100, status=403, path=f"/admin/{i}") for i in range(200)]
    events += [request_factory(ts=T0 + 7 * HOUR + i * 50) for i in range(1000)]
    events.append(lifecycle_factory(key_id="key-2", type="apiKey.revoked", ts=T0 + 8 * HOUR))
    events.append(request_factory(key_id="key-2", ts=T0 + 9 * HOUR, ip="198.51.100.1", status=401))
    return events


def test_replay_gives_identical_alerts(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """Processing the same stream twice (state serialised between events) yields the same alerts and ids."""
    runs = []
    for _ in range(2):
        cluster = cluster_factory(rate={"min_history_minutes": 60}, ip={"learning_seconds": 3600})
        cluster.feed(mixed_stream(request_factory, lifecycle_factory))
        runs.append([a.model_dump(mode="json") for a in cluster.alerts])
    assert runs[0] == runs[1]
    types = {a["type"] for a in runs[0]}
    assert {
        "apiKey.created",
        "apiKey.revoked",
        "apiKey.usedFromNewIp",
        "apiKey.4xxCluster",
        "apiKey.requestSpike",
        "apiKey.usedAfterRevoke",
    } <= types
    assert len({a["id"] for a in runs[0]}) == len(runs[0])


def test_unknown_forward_kind_is_ignored(cluster_factory: Callable[..., Cluster]) -> None:
    """A forward no detector knows changes nothing and forwards nothing."""
    cluster = cluster_factory()
    outcome = cluster.engine.on_forward(None, Forward("acme", "key-9", "mystery", {"x": 1}, T0))
    assert (outcome.alerts, outcome.forwards, outcome.state.detectors) == ([], [], {})


def test_an_episode_end_is_not_suppressed_by_its_start() -> None:
    """A close under a discriminator its open suppressed still resolves; a second open stays suppressed."""
    spec: DetectorSpec[Any, None] = DetectorSpec(
        name="toy", alerts=(AlertSpec("apiKey.toy", "low"),), config=dict, state=None, build=lambda c, x: Detector()
    )
    engine = Engine(source="/t", specs=[spec], by_env={"live": DetectorSet([], DEFAULT_MAX_ENTRIES)})
    state = KeyState("acme", "key-1")

    def finding(edge: Any) -> Finding:
        return Finding("apiKey.toy", "s", {}, discriminator="n", suppress_for_ms=HOUR, episode=edge)

    opened = engine._alert(state, "toy", finding("open"), None, T0, "live")
    closed = engine._alert(state, "toy", finding("close"), None, T0 + MINUTE, "live")
    again = engine._alert(state, "toy", finding("open"), None, T0 + 2 * MINUTE, "live")
    assert opened is not None
    assert closed is not None
    assert again is None
    assert (closed.data.status, closed.data.episode_id) == ("resolved", opened.data.episode_id)


def test_a_detector_of_scope_both_hears_forwards_to_keys_and_to_the_tenant() -> None:
    """Scope "both": the detector's `on_forward` runs for a key's state and for its tenant's, and tells them apart."""
    heard: list[tuple[str, bool]] = []

    class Both(Detector[None]):
        def on_forward(self, key: KeyState, forward: Forward) -> None:
            heard.append((key.subject, key.is_tenant))

    spec: DetectorSpec[Any, None] = DetectorSpec(
        name="both", alerts=(AlertSpec("apiKey.bothTest", "low"),), config=Any, state=None, build=lambda c, x: Both(),
        scope="both",
    )  # fmt: skip
    detectors = DetectorSet([(spec, Both())], DEFAULT_MAX_ENTRIES)
    engine = Engine(source="/t", specs=[spec], by_env={"live": detectors, "sandbox": detectors})
    engine.on_forward(None, Forward("acme", "key-1", "hello", {}, T0))
    engine.on_forward(None, Forward.to_tenant("acme", "hello", {}, T0))
    assert heard == [("acme/key-1", False), ("acme/", True)]
