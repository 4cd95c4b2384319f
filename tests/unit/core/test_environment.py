"""Environment detector: apiKey.environmentMismatch both ways, and the learning key's usedFromNewIp when its
network is new to the whole tenant; bounded tenant state; the same ids whatever order facts reach the tenant."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import orjson
from coretest import DAY, HOUR, MINUTE, T0, Cluster

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent, RequestRecord, format_time
from keywatch.core.engine import Forward
from keywatch.core.environment import ALERT_TYPE, NAME, EnvironmentState
from keywatch.geo import GeoInfo, StaticGeoLookup
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.processor import Processor
from keywatch.replay import replay
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink

MISMATCH = ALERT_TYPE
NEW_IP = "apiKey.usedFromNewIp"
LIVE_HOST, CI_HOST = "10.1.1.5", "10.1.9.5"  # the tenant's production range, its test/CI range

Make = Callable[..., RequestRecord]


def of(alerts: list[Alert], kind: str) -> list[Alert]:
    """The firing alerts of one type."""
    return [a for a in alerts if a.type == kind and a.data.status != "resolved"]


def learning_alerts(alerts: list[Alert]) -> list[Alert]:
    """usedFromNewIp alerts of the learning, new-to-the-tenant rule."""
    return [a for a in of(alerts, NEW_IP) if a.data.evidence.get("phase") == "learning"]


def history(make: Make, days: int = 3, start: int = T0) -> list[RequestRecord]:
    """A live key on the production range and a sandbox key on the CI range, every 2 h for `days` days."""
    out = []
    for i in range(days * 12):
        at = start + i * 2 * HOUR
        out.append(make(ts=at, key_id="live-1", env="live", ip=LIVE_HOST))
        out.append(make(ts=at + MINUTE, key_id="test-1", env="sandbox", ip=CI_HOST))
    return out


def test_sandbox_key_on_live_hosts_is_medium_once_per_range_and_day(
    cluster_factory: Callable[..., Cluster], request_factory: Make
) -> None:
    """A sandbox key used from the live key's range: medium, at its first use that day, the live key in the
    evidence; quiet for the rest of the day; again (another id) the next day; the live key stays quiet."""
    cluster = cluster_factory()
    assert of(cluster.feed(history(request_factory)), MISMATCH) == []
    at = T0 + 3 * DAY + 9 * HOUR
    used = [request_factory(ts=at + i * 10 * MINUTE, key_id="test-1", env="sandbox", ip="10.1.1.77") for i in range(6)]
    more = [request_factory(ts=at + HOUR, key_id="live-1", env="live", ip=LIVE_HOST)]
    [alert] = of(cluster.feed([*used, *more]), MISMATCH)
    assert (alert.subject, alert.severity, alert.data.env) == ("acme/test-1", "medium", "sandbox")
    assert alert.time == Alert.model_validate({**alert.model_dump(), "time": at}).time
    ev = alert.data.evidence
    assert (ev["range"], ev["key_env"], ev["range_env"], ev["range_env_since"]) == (
        "10.1.1.0/24",
        "sandbox",
        "live",
        format_time(T0),
    )
    assert [o["key_id"] for o in ev["other_keys"]] == ["live-1"]
    [again] = of(cluster.feed([request_factory(ts=at + DAY, key_id="test-1", env="sandbox", ip="10.1.1.77")]), MISMATCH)
    assert again.id != alert.id
    assert again.subject == "acme/test-1"


def test_live_key_on_sandbox_only_hosts_is_high(cluster_factory: Callable[..., Cluster], request_factory: Make) -> None:
    """A live key used from the range only sandbox keys used: high; the sandbox keys that keep using their own
    range are never flagged, whatever the live key does there."""
    cluster = cluster_factory()
    cluster.feed(history(request_factory))
    at = T0 + 3 * DAY + HOUR
    alerts = cluster.feed(
        [
            request_factory(ts=at, key_id="live-1", env="live", ip="10.1.9.200"),
            *history(request_factory, days=2, start=at + MINUTE),
            request_factory(ts=at + DAY + 2 * MINUTE, key_id="live-1", env="live", ip="10.1.9.201"),
        ]
    )
    found = of(alerts, MISMATCH)
    assert [(a.subject, a.severity) for a in found] == [("acme/live-1", "high")] * 2  # today and tomorrow
    assert found[0].data.evidence["range_env"] == "sandbox"
    assert [o["key_id"] for o in found[0].data.evidence["other_keys"]] == ["test-1"]


def test_a_new_key_is_checked_from_its_very_first_request(
    cluster_factory: Callable[..., Cluster], request_factory: Make
) -> None:
    """Learning or not: a sandbox key never seen before whose first request comes from the production range, and
    a new live key whose first request comes from the CI range, each alert at that first request."""
    cluster = cluster_factory()
    cluster.feed(history(request_factory))
    at = T0 + 3 * DAY + HOUR
    first = [
        request_factory(ts=at, key_id="test-new", env="sandbox", ip="10.1.1.40"),
        request_factory(ts=at + MINUTE, key_id="live-new", env="live", ip="10.1.9.40"),
    ]
    found = of(cluster.feed(first), MISMATCH)
    assert [(a.subject, a.severity) for a in found] == [("acme/test-new", "medium"), ("acme/live-new", "high")]
    assert [a.time for a in found] == [r.ts for r in first]
    assert all(a.data.evidence["key_since"] == a.data.evidence["key_first_use_of_day"] for a in found)


def test_separate_hosts_and_two_live_keys_sharing_hosts_are_quiet(
    cluster_factory: Callable[..., Cluster], request_factory: Make
) -> None:
    """The normal case: each environment on its own hosts; two live keys on the same hosts; a sandbox key on a
    range whose live use is older than the window."""
    cluster = cluster_factory()
    events = history(request_factory, days=4)
    events += [request_factory(ts=T0 + i * HOUR, key_id="live-2", env="live", ip="10.1.1.9") for i in range(90)]
    events += [request_factory(ts=T0 + DAY, key_id="live-3", env="live", ip="10.1.200.1")]
    events += [request_factory(ts=T0 + 32 * DAY, key_id="test-2", env="sandbox", ip="10.1.200.9")]
    events.sort(key=lambda r: r.ts)
    assert of(cluster.feed(events), MISMATCH) == []


def test_the_window(cluster_factory: Callable[..., Cluster], request_factory: Make) -> None:
    """A live use 29 days before still makes the range live; 31 days before it does not."""
    for gap, expected in ((29, 1), (31, 0)):
        cluster = cluster_factory()
        cluster.feed([request_factory(ts=T0, key_id="live-1", env="live", ip=LIVE_HOST)])
        found = cluster.feed([request_factory(ts=T0 + gap * DAY, key_id="test-1", env="sandbox", ip=LIVE_HOST)])
        assert len(of(found, MISMATCH)) == expected, gap


def test_trusted_ranges_are_not_checked_unless_asked(
    cluster_factory: Callable[..., Cluster], request_factory: Make
) -> None:
    """A range on a trusted list (corporate egress) is shared infrastructure: quiet, unless check_trusted."""
    trusted = {"tenant": {"acme": {"corp-egress": ["10.1.1.0/24"]}}}
    for check, expected in ((False, 0), (True, 1)):
        cluster = cluster_factory(trusted=trusted, environment={"check_trusted": check})
        cluster.feed([request_factory(ts=T0, key_id="live-1", env="live", ip=LIVE_HOST)])
        found = cluster.feed([request_factory(ts=T0 + HOUR, key_id="test-1", env="sandbox", ip="10.1.1.6")])
        assert len(of(found, MISMATCH)) == expected


def test_disabled(cluster_factory: Callable[..., Cluster], request_factory: Make) -> None:
    """enabled = false: no reports, no alerts."""
    cluster = cluster_factory(environment={"enabled": False})
    cluster.feed([request_factory(ts=T0, key_id="live-1", env="live", ip=LIVE_HOST)])
    assert cluster.feed([request_factory(ts=T0 + HOUR, key_id="test-1", env="sandbox", ip=LIVE_HOST)]) == []
    tenant = cluster.states.get("acme/")
    assert tenant is None or "environment" not in tenant.detectors  # (other detectors may keep tenant state)


# -- a learning key on a network new to the tenant -------------------------------------------------------------


def _new_key(lifecycle: Callable[..., LifecycleEvent], at: int, key_id: str = "new-1", **kw: Any) -> LifecycleEvent:
    return lifecycle(ts=at, key_id=key_id, **kw)


def test_learning_key_used_from_a_network_new_to_the_tenant(
    cluster_factory: Callable[..., Cluster], request_factory: Make, lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """A key created today and used from an attacker network while it learns fires usedFromNewIp ("learning",
    new to the tenant), once per network; the tenant's hosts (known range, or a new range in its /16) stay
    quiet, and so does the IP baseline itself (the key is learning)."""
    cluster = cluster_factory()
    cluster.feed(history(request_factory))
    at = T0 + 3 * DAY
    events: list[RequestRecord | LifecycleEvent] = [_new_key(lifecycle_factory, at)]
    events += [request_factory(ts=at + i * MINUTE, key_id="new-1", ip=LIVE_HOST) for i in range(1, 5)]
    events += [request_factory(ts=at + 5 * MINUTE, key_id="new-1", ip="10.1.77.3")]  # autoscaling in the /16
    attack = at + 2 * HOUR
    events += [request_factory(ts=attack + i * MINUTE, key_id="new-1", ip=f"203.0.{113 + i % 2}.9") for i in range(6)]
    events += [request_factory(ts=attack + HOUR, key_id="new-1", ip="198.51.100.7", path="/v1/balance?x=1")]
    found = learning_alerts(cluster.feed(events))
    assert [(a.subject, a.data.evidence["network"]) for a in found] == [
        ("acme/new-1", "203.0.0.0/16"),
        ("acme/new-1", "198.51.0.0/16"),
    ]
    first = found[0]
    assert first.time == Alert.model_validate({**first.model_dump(), "time": attack}).time
    ev = first.data.evidence
    assert (ev["phase"], ev["new_to_tenant"], ev["ip"], ev["range"]) == (
        "learning",
        True,
        "203.0.113.9",
        "203.0.113.0/24",
    )
    assert ev["known"]["tenant_networks"] == 1
    assert ev["known"]["top_networks"] == [["10.1.0.0/16", 2]]
    assert found[1].data.evidence["path"] == "/v1/balance"
    assert len(of(cluster.alerts, NEW_IP)) == 2  # the baseline's own rule is silent while learning
    assert found[0].id != found[1].id


def test_learning_rule_is_quiet_without_tenant_history_and_after_learning(
    cluster_factory: Callable[..., Cluster], request_factory: Make, lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """A tenant's very first key, and a key of a tenant known for less than tenant_history_hours, have nothing
    to compare with: quiet. The learning rule is off with new_to_tenant = false."""
    cluster = cluster_factory()
    first = cluster.feed([request_factory(ts=T0 + i * MINUTE, key_id="k-1", ip="203.0.113.5") for i in range(3)])
    young = cluster.feed([request_factory(ts=T0 + HOUR, key_id="k-2", ip="198.51.100.5")])
    assert learning_alerts(first + young) == []
    off = cluster_factory(environment={"new_to_tenant": False})
    off.feed(history(request_factory))
    assert learning_alerts(off.feed([request_factory(ts=T0 + 3 * DAY, key_id="new-1", ip="203.0.113.5")])) == []


def test_rotation_and_new_key_on_existing_hosts_are_quiet(
    cluster_factory: Callable[..., Cluster], request_factory: Make, lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """A rotation's new key on the old key's hosts, and a new sandbox key on the tenant's CI range, stay quiet
    (no mismatch, no learning alert)."""
    cluster = cluster_factory()
    cluster.feed(history(request_factory))
    at = T0 + 3 * DAY
    events: list[RequestRecord | LifecycleEvent] = [
        _new_key(lifecycle_factory, at, key_id="live-2", replaces_key_id="live-1"),
        _new_key(lifecycle_factory, at, key_id="test-2", env="sandbox"),
    ]
    events += [request_factory(ts=at + i * MINUTE, key_id="live-2", ip=LIVE_HOST) for i in range(1, 20)]
    events += [request_factory(ts=at + i * MINUTE, key_id="test-2", env="sandbox", ip=CI_HOST) for i in range(1, 20)]
    alerts = cluster.feed(events)
    assert learning_alerts(alerts) == []
    assert of(alerts, MISMATCH) == []


def test_with_geoip_a_new_range_in_the_tenants_asn_is_quiet(
    cluster_factory: Callable[..., Cluster], request_factory: Make
) -> None:
    """With GeoIP the network is the ASN: a new key on a new /16 of the tenant's cloud ASN is autoscaling
    (quiet); another ASN is new to the tenant (the alert names it)."""
    geo = StaticGeoLookup(
        {
            "10.0.0.0/8": GeoInfo(asn=64500, org="Tenant Cloud", country="DE"),
            "203.0.113.0/24": GeoInfo(asn=64999, org="Hosting", country="NL"),
        }
    )
    cluster = cluster_factory(geo=geo)
    cluster.feed(history(request_factory))
    at = T0 + 3 * DAY
    quiet = cluster.feed([request_factory(ts=at, key_id="new-1", ip="10.200.3.4")])
    [alert] = learning_alerts(cluster.feed([request_factory(ts=at + HOUR, key_id="new-1", ip="203.0.113.4")]))
    assert learning_alerts(quiet) == []
    assert (alert.data.evidence["network"], alert.data.evidence["asn"], alert.data.evidence["org"]) == (
        "AS64999",
        64999,
        "Hosting",
    )


# -- bounded tenant state --------------------------------------------------------------------------------------


def test_tenant_registry_stays_within_its_caps(cluster_factory: Callable[..., Cluster], request_factory: Make) -> None:
    """Many keys on many ranges: the tenant keeps at most max_ranges ranges, max_keys_per_env keys per range and
    environment, max_networks networks (4 keys each); a key remembers at most 16 report days."""
    cluster = cluster_factory(environment={"max_ranges": 16, "max_keys_per_env": 2, "max_networks": 8})
    events = []
    for i in range(400):
        env = "live" if i % 3 else "sandbox"
        events.append(request_factory(ts=T0 + i * MINUTE, key_id=f"k-{i % 9}", env=env, ip=f"10.{i % 23}.{i % 41}.1"))
    cluster.feed(events)
    tenant: EnvironmentState = cluster.states["acme/"].detectors[NAME]
    assert 15 <= len(tenant.ranges) <= 16  # a full registry drops a sixteenth at once (at least one entry)
    assert 7 <= len(tenant.networks) <= 8
    for entry in tenant.ranges.values():
        for presence in (entry.live, entry.sandbox):
            assert presence is None or len(presence.keys) <= 2
    assert all(len(n.keys) <= 4 for n in tenant.networks.values())
    assert all(len(cluster.states[f"acme/k-{i}"].detectors[NAME].reported) <= 16 for i in range(9))


def test_a_full_registry_forgets_the_least_recently_used_first(
    cluster_factory: Callable[..., Cluster], request_factory: Make
) -> None:
    """Ranges (and networks) reported one after another: whenever the registry is past its cap, the least recently
    used go, a sixteenth of the cap at once, so what is kept is always the most recent ones and never more than
    the cap; a range reported again (by another key) is recent again and stays."""
    cluster = cluster_factory(environment={"max_ranges": 32, "max_networks": 16})
    kept_sizes = set()
    for i in range(200):
        events = [request_factory(ts=T0 + i * MINUTE, key_id=f"k-{i}", ip=f"10.{i}.7.1")]
        events.append(request_factory(ts=T0 + i * MINUTE + 1, key_id=f"s-{i}", ip="10.250.1.1"))  # reused range
        cluster.feed(events)
        tenant: EnvironmentState = cluster.states["acme/"].detectors[NAME]
        if i >= 40:
            kept_sizes.add(len(tenant.ranges))
        newest = [f"10.{j}.7.0/24" for j in range(max(0, i - len(tenant.ranges) + 2), i + 1)]
        assert set(tenant.ranges) == {*newest, "10.250.1.0/24"}
        assert len(tenant.networks) <= 16
        assert "10.250.0.0/16" in tenant.networks
        assert f"10.{i}.0.0/16" in tenant.networks
    assert kept_sizes == {30, 31, 32}  # full: 33 ranges become 30, then two more come before the next scan


# -- order: replay versus the worker -------------------------------------------------------------------------


def _scenario(make: Make, lifecycle: Callable[..., LifecycleEvent]) -> list[RequestRecord | LifecycleEvent]:
    events: list[RequestRecord | LifecycleEvent] = list(history(make, days=3))
    at = T0 + 3 * DAY + 9 * HOUR
    events += [make(ts=at + i * 7 * MINUTE, key_id="test-1", env="sandbox", ip="10.1.1.80") for i in range(5)]
    events += [make(ts=at + 30 * MINUTE, key_id="live-1", env="live", ip="10.1.9.81")]
    events += [make(ts=at + 31 * MINUTE, key_id="live-2", env="live", ip="10.1.9.82")]
    events += [_new_key(lifecycle, at, key_id="new-1")]
    events += [make(ts=at + 40 * MINUTE + i * MINUTE, key_id="new-1", ip="203.0.113.66") for i in range(3)]
    events += [make(ts=at + DAY, key_id="test-1", env="sandbox", ip="10.1.1.80")]
    return sorted(events, key=lambda e: (e.ts, e.key_id))


def _ids(alerts: list[Alert]) -> list[tuple[str, str]]:
    return sorted({(a.id, a.subject) for a in of(alerts, MISMATCH) + learning_alerts(alerts)})


def test_worker_order_gives_replays_ids(
    cluster_factory: Callable[..., Cluster], request_factory: Make, lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """Replay (event-time order, forwards at once) and a worker-like run (keys' records processed key by key,
    the tenant's reports delivered late and shuffled, the facts a mismatch rests on arriving after it) give the
    same mismatch and learning alerts, ids included."""
    events = _scenario(request_factory, lifecycle_factory)
    replayed = cluster_factory()
    want = _ids(replayed.feed(events))
    assert len(want) == 5  # test-1 twice, live-1, live-2, new-1

    for seed in range(5):
        rng = random.Random(seed)
        worker = cluster_factory()
        by_key: dict[str, list[RequestRecord | LifecycleEvent]] = {}
        for event in events:
            by_key.setdefault(event.key_id, []).append(event)
        # The history's facts (three days before the incidents) reach the tenant first in the worker too;
        # within the incident day, the key whose facts a mismatch rests on is processed last.
        history_end = T0 + 3 * DAY
        early = [e for e in events if int(e.ts.timestamp() * 1000) < history_end]
        worker.feed(early, deliver=False)
        _deliver_shuffled(worker, rng)
        order = sorted(by_key, key=lambda k: (k in ("live-1", "live-2"), rng.random()))
        for key_id in order:
            late = [e for e in by_key[key_id] if int(e.ts.timestamp() * 1000) >= history_end]
            worker.feed(late, deliver=False)
            if rng.random() < 0.5:
                _deliver_shuffled(worker, rng)
        _deliver_shuffled(worker, rng)
        assert _ids(worker.alerts) == want, seed


def _deliver_shuffled(cluster: Cluster, rng: random.Random) -> None:
    """Deliver the pending forwards in a random order (and what they cause, also shuffled), as alerts come."""
    while cluster.pending:
        rng.shuffle(cluster.pending)
        forward = cluster.pending.pop()
        forward = Forward(**orjson.loads(orjson.dumps(forward)))
        outcome = cluster.engine.on_forward(cluster.states.get(forward.subject), forward)
        cluster.states[forward.subject] = cluster._roundtrip(outcome.state)
        cluster.alerts.extend(outcome.alerts)
        cluster.pending.extend(outcome.forwards)


def test_a_late_report_of_the_ranges_first_environment_still_flags(
    cluster_factory: Callable[..., Cluster], request_factory: Make
) -> None:
    """Monotone: the sandbox key's report comes first, the live key's (earlier) report of the range after it:
    the mismatch is found when the later fact arrives, with the id and time replay gives."""
    live = request_factory(ts=T0, key_id="live-1", env="live", ip=LIVE_HOST)
    sandbox = request_factory(ts=T0 + HOUR, key_id="test-1", env="sandbox", ip=LIVE_HOST)
    replayed = cluster_factory()
    want = [(a.id, a.time) for a in of(replayed.feed([live, sandbox]), MISMATCH)]
    worker = cluster_factory()
    worker.feed([sandbox, live], deliver=False)
    worker.pending.reverse()  # the live key's report reaches the tenant last
    worker.deliver()
    got = [(a.id, a.time) for a in of(worker.alerts, MISMATCH)]
    assert got == want
    assert len(want) == 1


def test_a_tenants_first_ipv6_use_has_no_ipv6_history_to_compare_with(
    cluster_factory: Callable[..., Cluster], request_factory: Make
) -> None:
    """Without GeoIP an IPv6 /32 is compared with the tenant's IPv6 networks only: a learning key of a tenant
    that never used IPv6 is quiet there; once the tenant uses IPv6, another /32 is new to it."""
    cluster = cluster_factory()
    cluster.feed(history(request_factory))
    at = T0 + 3 * DAY
    first_v6 = cluster.feed([request_factory(ts=at, key_id="new-1", ip="2001:db8:1::5")])
    assert learning_alerts(first_v6) == []
    [alert] = learning_alerts(cluster.feed([request_factory(ts=at + HOUR, key_id="new-2", ip="2a00:1450::7")]))
    assert alert.data.evidence["network"] == "2a00:1450::/32"


def _line(ts: int, key_id: str, env: str, ip: str) -> bytes:
    record = {"ts": ts, "tenant": "acme", "key_id": key_id, "env": env, "ip": ip, "method": "GET"}
    return orjson.dumps({**record, "path": "/v1/orders", "status": 200})


def test_the_workers_detect_path_gives_replays_ids() -> None:
    """`keywatch replay` and the worker's detect path (records packed on one partition first, every forward
    delivered after all of them: the tenant hears each report late) emit the same mismatch and learning alerts."""
    lines = []
    for i in range(40):
        at = T0 + i * 2 * HOUR
        lines += [_line(at, "live-1", "live", LIVE_HOST), _line(at + MINUTE, "test-1", "sandbox", CI_HOST)]
    at = T0 + 80 * HOUR
    lines += [_line(at, "test-1", "sandbox", "10.1.1.90"), _line(at + MINUTE, "live-1", "live", "10.1.9.91")]
    lines += [_line(at + 2 * MINUTE, "new-1", "live", "203.0.113.7")]
    engine = make_engine(Settings())
    replayed: list[Alert] = []
    replay(lines, [], engine, replayed.append)

    sink = MemorySink()
    processor = Processor(make_engine(Settings()), sink, Topics("requests", "lifecycle"))

    async def run() -> None:
        store: dict[bytes, bytes] = {}
        packed = processor.pack_batch([("requests", 0, i, None, line) for i, line in enumerate(lines)], lambda s: 0)
        for value in packed.keyed[0]:
            await processor.detect_message(None, value, store, 0)
        delivered = 0
        while delivered < len(sink.messages["keyed"]):
            key, value = sink.messages["keyed"][delivered]
            delivered += 1
            await processor.detect_message(key, value, store, 0)

    asyncio.run(run())
    worker = [Alert.model_validate_json(value) for _, value in sink.messages["alerts"]]
    assert _ids(worker) == _ids(replayed)
    assert len(_ids(replayed)) == 3
