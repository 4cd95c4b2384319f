"""IP baseline (apiKey.usedFromNewIp): learning, novelty by range/ASN/country, forgetting, rotation hand-off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from coretest import DAY, HOUR, MINUTE, T0, Cluster

from keywatch.config import ConfigError
from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent, RequestRecord, format_time
from keywatch.core.ip_baseline import range_of
from keywatch.geo import Geoip2Lookup

NEW_IP = "apiKey.usedFromNewIp"
FAST_LEARNING = {"learning_seconds": 3600, "learning_requests": 5}


def new_ip(alerts: list[Alert]) -> list[Alert]:
    """Only the new-IP alerts that fire (not the ends of episodes)."""
    return [a for a in alerts if a.type == NEW_IP and a.data.status != "resolved"]


def resolved(alerts: list[Alert]) -> list[Alert]:
    """Only the new-IP episode ends."""
    return [a for a in alerts if a.type == NEW_IP and a.data.status == "resolved"]


@pytest.fixture
def geo(geoip_paths: tuple[Path, Path]) -> Geoip2Lookup:
    """The test GeoIP databases."""
    asn, country = geoip_paths
    return Geoip2Lookup(asn_db=asn, country_db=country)


@pytest.fixture
def learned(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> Callable[..., Cluster]:
    """A cluster whose key-1 was created at T0 and used from 192.0.2.0/24 through its learning period."""

    def make(*, ips: tuple[str, ...] = ("192.0.2.10",), **kwargs: Any) -> Cluster:
        kwargs.setdefault("ip", FAST_LEARNING)
        cluster = cluster_factory(**kwargs)
        cluster.feed([lifecycle_factory()])
        events = [request_factory(ts=T0 + i * 10 * MINUTE, ip=ips[i % len(ips)]) for i in range(8)]
        assert new_ip(cluster.feed(events)) == []
        return cluster

    return make


def test_learning_period_is_silent(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """During learning, requests from many ranges raise nothing."""
    cluster = cluster_factory(ip=FAST_LEARNING)
    cluster.feed([lifecycle_factory()])
    ips = ["192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1", "10.9.9.9"]
    assert new_ip(cluster.feed(request_factory(ts=T0 + i * MINUTE, ip=ip) for i, ip in enumerate(ips))) == []


def test_new_range_in_known_asn_is_low(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord], geo: Geoip2Lookup
) -> None:
    """A new /24 in an ASN the key already uses alerts once, at low severity, with the evidence filled in."""
    cluster = learned(geo=geo)
    [alert] = new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip="198.51.100.7")]))
    ev = alert.data.evidence
    assert alert.severity == "low"
    assert (ev["ip"], ev["range"], ev["asn"], ev["org"], ev["country"]) == (
        "198.51.100.7",
        "198.51.100.0/24",
        64500,
        "Example Hosting A",
        "US",
    )
    assert ev["known"]["top_ranges"] == [["192.0.2.0/24", 8]]
    assert ev["known"]["top_asns"] == [["64500", 8, "Example Hosting A"]]
    assert ev["known"]["top_countries"] == [["US", 8]]
    assert ev["key_known_for_seconds"] == 7200.0
    assert alert.data.runbook.endswith("#usedfromnewip")


@pytest.mark.parametrize(
    ("ip", "severity"),
    [("10.1.2.3", "medium"), ("203.0.113.9", "high")],
    ids=["new-asn-known-country", "new-country"],
)
def test_severity_rises_with_what_is_new(
    learned: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    geo: Geoip2Lookup,
    ip: str,
    severity: str,
) -> None:
    """A new ASN in a known country is medium; a new country is high."""
    cluster = learned(geo=geo)
    [alert] = new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip=ip)]))
    assert alert.severity == severity


def test_known_range_and_same_range_neighbour_are_quiet(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Another address of a known /24 is not new."""
    cluster = learned()
    assert new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip="192.0.2.200")])) == []


def test_without_geo_new_range_uses_configured_severity(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Without GeoIP data only ranges are compared, and a new one gets severity_without_geo (medium)."""
    cluster = learned()
    [alert] = new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip="203.0.113.9")]))
    assert (alert.severity, alert.data.evidence["asn"], alert.data.evidence["country"]) == ("medium", None, None)


def test_one_alert_per_new_range(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """A new range alerts on its first request only; it is known afterwards."""
    cluster = learned()
    events = [request_factory(ts=T0 + 2 * HOUR + i * MINUTE, ip=f"203.0.113.{i + 1}") for i in range(5)]
    assert len(new_ip(cluster.feed(events))) == 1


def test_ipv6_ranges_are_compared_as_64(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord], geo: Geoip2Lookup
) -> None:
    """Addresses in a known /64 are quiet; a different /64 alerts with its range."""
    cluster = learned(ips=("2001:db8:1:2::5",), geo=geo)
    assert new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip="2001:db8:1:2:ffff::1")])) == []
    [alert] = new_ip(cluster.feed([request_factory(ts=T0 + 3 * HOUR, ip="2001:db8:1:3::1")]))
    assert (alert.data.evidence["range"], alert.severity) == ("2001:db8:1:3::/64", "low")


@pytest.mark.parametrize(
    ("ip", "v4", "v6", "expected"),
    [
        ("192.0.2.77", 24, 64, "192.0.2.0/24"),
        ("198.51.100.77", 16, 64, "198.51.0.0/16"),
        ("::ffff:192.0.2.7", 24, 64, "192.0.2.0/24"),
        ("2001:db8:abcd:12:1::1", 24, 64, "2001:db8:abcd:12::/64"),
        ("2001:db8:abcd:12ff:1::1", 24, 56, "2001:db8:abcd:1200::/56"),
    ],
)
def test_range_of(ip: str, v4: int, v6: int, expected: str) -> None:
    """Ranges are computed by prefix length; IPv4-mapped IPv6 addresses count as IPv4."""
    assert range_of(ip, v4, v6) == expected


def test_unused_ranges_are_forgotten(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """A range unused for longer than forget_after_seconds (30 days) is new again."""
    cluster = learned()
    events = [request_factory(ts=T0 + d * DAY, ip="203.0.113.5") for d in range(1, 35)]
    assert len(new_ip(cluster.feed(events))) == 1  # 203.0.113.0/24 once; 192.0.2.0/24 is now forgotten
    [alert] = new_ip(cluster.feed([request_factory(ts=T0 + 35 * DAY, ip="192.0.2.10")]))
    assert alert.data.evidence["range"] == "192.0.2.0/24"


def test_re_seen_range_after_eviction_is_suppressed_then_alerts_again(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """An evicted range seen again within the suppression period stays quiet; after it, it alerts anew."""
    cluster = learned(ip={**FAST_LEARNING, "max_ranges": 2})
    t = T0 + 2 * HOUR
    first = new_ip(cluster.feed([request_factory(ts=t, ip="203.0.113.5")]))
    # Two more ranges push 203.0.113.0/24 out (least recently seen).
    cluster.feed([request_factory(ts=t + MINUTE, ip="198.51.100.5"), request_factory(ts=t + 2 * MINUTE, ip="10.0.0.1")])
    assert "203.0.113.0/24" not in cluster.states["acme/key-1"].detectors["ip"].ranges
    assert new_ip(cluster.feed([request_factory(ts=t + HOUR, ip="203.0.113.5")])) == []
    cluster.feed([request_factory(ts=t + 2 * HOUR, ip="198.51.100.5"), request_factory(ts=t + 3 * HOUR, ip="10.0.0.1")])
    again = new_ip(cluster.feed([request_factory(ts=t + 25 * HOUR, ip="203.0.113.5")]))
    assert len(first) == len(again) == 1
    assert first[0].id != again[0].id


def test_learning_needs_time_and_requests(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """Past the learning time but short of learning_requests the key is still learning; then it alerts."""
    cluster = cluster_factory(ip={"learning_seconds": 3600, "learning_requests": 10})
    cluster.feed([lifecycle_factory(), request_factory(ts=T0)])
    assert new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip="198.51.100.1")])) == []  # 2 requests
    cluster.feed(request_factory(ts=T0 + 3 * HOUR + i) for i in range(8))  # 10 requests
    assert len(new_ip(cluster.feed([request_factory(ts=T0 + 4 * HOUR, ip="203.0.113.1")]))) == 1


def test_learning_by_count_alone_is_not_enough(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """Many requests in the first hour do not end a 24 h learning period."""
    cluster = cluster_factory()
    cluster.feed([lifecycle_factory()])
    cluster.feed(request_factory(ts=T0 + i * 1000) for i in range(200))
    assert new_ip(cluster.feed([request_factory(ts=T0 + HOUR, ip="203.0.113.1")])) == []
    assert len(new_ip(cluster.feed([request_factory(ts=T0 + 25 * HOUR, ip="198.51.100.1")]))) == 1


def test_learning_ends_after_max_even_for_rare_keys(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """A rarely used key stops learning after learning_max_seconds (7 days)."""
    cluster = cluster_factory()
    cluster.feed([request_factory(ts=T0), request_factory(ts=T0 + 6 * DAY)])
    assert new_ip(cluster.feed([request_factory(ts=T0 + 6 * DAY + 1, ip="198.51.100.1")])) == []
    assert len(new_ip(cluster.feed([request_factory(ts=T0 + 8 * DAY, ip="203.0.113.1")]))) == 1


def test_learning_starts_at_the_first_request_seen_not_at_creation(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """A key created 88 days before its first request keywatch sees learns from that request on."""
    cluster = cluster_factory(ip=FAST_LEARNING)
    cluster.feed([lifecycle_factory(ts=T0 - 88 * DAY)])
    ips = ["192.0.2.10", "198.51.100.1", "203.0.113.1", "10.1.2.3"]
    first = [request_factory(ts=T0 + i * 10 * MINUTE, ip=ips[i % len(ips)]) for i in range(8)]
    assert new_ip(cluster.feed(first)) == []
    # Past learning (1 h and 5 requests after the first request), a new range alerts again.
    [alert] = new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip="172.16.5.5")]))
    assert alert.data.evidence["key_known_for_seconds"] == 7200.0


def test_learning_restarts_when_the_keys_state_was_evicted(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """After the key cap evicted a learned key's state, its next requests learn again instead of alerting."""
    cluster = learned()
    assert len(new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip="203.0.113.9")]))) == 1
    del cluster.states["acme/key-1"]  # what the key cap does: the whole state goes
    later = [request_factory(ts=T0 + 3 * HOUR + i * MINUTE, ip=f"172.16.{i}.5") for i in range(4)]
    assert new_ip(cluster.feed(later)) == []
    assert cluster.states["acme/key-1"].registry.first_seen_ms == T0 + 3 * HOUR


def _rotation_events(
    request_factory: Callable[..., RequestRecord], lifecycle_factory: Callable[..., LifecycleEvent]
) -> tuple[list[Any], list[Any]]:
    old = [lifecycle_factory(key_id="key-old", ts=T0 - 10 * DAY)]
    old += [
        request_factory(key_id="key-old", ts=T0 - 5 * DAY + i * HOUR, ip=ip)
        for i, ip in enumerate(["192.0.2.10", "198.51.100.20"] * 40)
    ]
    new = [lifecycle_factory(key_id="key-new", ts=T0, replaces_key_id="key-old")]
    return old, new


def test_rotation_inherits_baseline_across_partitions(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """A rotated key used from its predecessor's hosts stays quiet, and alerts on a new range at once."""
    cluster = cluster_factory()
    old, new = _rotation_events(request_factory, lifecycle_factory)
    cluster.feed(old)
    cluster.feed(new)
    successor = cluster.states["acme/key-new"]
    assert set(successor.detectors["ip"].ranges) == {"192.0.2.0/24", "198.51.100.0/24"}
    assert cluster.states["acme/key-old"].registry.replaced_by == "key-new"
    same_hosts = [
        request_factory(key_id="key-new", ts=T0 + MINUTE + i, ip=ip)
        for i, ip in enumerate(["192.0.2.11", "198.51.100.21"])
    ]
    assert new_ip(cluster.feed(same_hosts)) == []
    [alert] = new_ip(cluster.feed([request_factory(key_id="key-new", ts=T0 + 2 * MINUTE, ip="203.0.113.1")]))
    assert alert.subject == "acme/key-new"


def test_rotation_hand_off_arriving_late_is_merged(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """The successor learns silently until the inherited baseline arrives, then merges counts."""
    cluster = cluster_factory()
    old, new = _rotation_events(request_factory, lifecycle_factory)
    cluster.feed(old)
    cluster.feed(new, deliver=False)
    early = [request_factory(key_id="key-new", ts=T0 + i * MINUTE, ip="192.0.2.50") for i in range(3)]
    assert new_ip(cluster.feed(early, deliver=False)) == []
    cluster.deliver()
    entry = cluster.states["acme/key-new"].detectors["ip"].ranges["192.0.2.0/24"]
    assert entry.count == 43  # 3 own + 40 inherited


def test_rotation_of_unused_key_keeps_normal_learning(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """Rotating a key never seen in use hands nothing over: the successor learns as a new key."""
    cluster = cluster_factory()
    cluster.feed([lifecycle_factory(key_id="key-new", ts=T0, replaces_key_id="key-old")])
    cluster.feed([request_factory(key_id="key-new", ts=T0 + MINUTE)])
    assert new_ip(cluster.feed([request_factory(key_id="key-new", ts=T0 + 2 * MINUTE, ip="203.0.113.1")])) == []


def test_late_request_does_not_move_last_seen_back(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """An out-of-order request from a known range updates first seen and count, never last seen backwards."""
    cluster = learned()
    cluster.feed([request_factory(ts=T0 - HOUR)])
    entry = cluster.states["acme/key-1"].detectors["ip"].ranges["192.0.2.0/24"]
    assert (entry.first_s, entry.last_s, entry.count) == ((T0 - HOUR) // 1000, (T0 + 70 * MINUTE) // 1000, 9)


def test_same_input_twice_gives_same_alert_ids(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord], geo: Geoip2Lookup
) -> None:
    """Re-processing the same requests yields the same new-IP alert ids; different ranges differ."""
    runs = []
    for _ in range(2):
        cluster = learned(geo=geo)
        runs.append(
            new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip=ip) for ip in ("203.0.113.1", "10.0.0.1")]))
        )
    assert [a.id for a in runs[0]] == [a.id for a in runs[1]]
    assert len({a.id for a in runs[0]}) == 2


# -- folding per network, fan-out, resolution ---------------------------------------------------------------


def test_new_ranges_of_one_network_fold_into_one_episode_that_resolves(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Forty new /24s of one /16 give one firing alert; the resolved end counts them once the network is quiet."""
    cluster = learned()
    t = T0 + 2 * HOUR
    events = [request_factory(ts=t + i * MINUTE, ip=f"172.20.{i}.7") for i in range(40)]
    [fired] = new_ip(cluster.feed(events))
    assert (fired.data.status, fired.data.evidence["network"]) == ("firing", "172.20.0.0/16")
    assert resolved(cluster.alerts) == []
    later = cluster.feed([request_factory(ts=t + 39 * MINUTE + HOUR + 1, ip="192.0.2.10")])
    [end] = resolved(later)
    ev = end.data.evidence
    assert end.data.episode_id == fired.data.episode_id
    assert (ev["network"], ev["new_ranges"], len(ev["sample_ranges"])) == ("172.20.0.0/16", 40, 5)
    assert ev["last_seen"] == format_time(t + 39 * MINUTE)
    assert end.time.timestamp() * 1000 == t + 39 * MINUTE + HOUR


def test_a_network_stays_quiet_for_the_suppression_period_after_its_episode(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """A network whose episode resolved fires again only after suppress_seconds (24 h)."""
    cluster = learned()
    t = T0 + 2 * HOUR
    assert len(new_ip(cluster.feed([request_factory(ts=t, ip="172.20.1.7")]))) == 1
    assert new_ip(cluster.feed([request_factory(ts=t + 3 * HOUR, ip="172.20.2.7")])) == []
    assert len(new_ip(cluster.feed([request_factory(ts=t + 25 * HOUR, ip="172.20.3.7")]))) == 1


def test_each_new_network_alerts_on_its_own_below_the_fan_out(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Two new /16s within the window are two alerts, each with its own network."""
    cluster = learned()
    alerts = new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR + i, ip=f"172.{20 + i}.1.7") for i in range(2)]))
    assert [a.data.evidence["network"] for a in alerts] == ["172.20.0.0/16", "172.21.0.0/16"]
    assert len({a.id for a in alerts}) == 2


def test_many_new_networks_are_one_fan_out_alert(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Browsers on 300 residential /24s in 60 /16s: two network alerts, then one many-networks alert, no more."""
    cluster = learned()
    t = T0 + 2 * HOUR
    events = [request_factory(ts=t + i * 20_000, ip=f"100.{64 + i % 60}.{i // 60}.9") for i in range(300)]
    alerts = new_ip(cluster.feed(events))
    assert len(alerts) == 3
    fan = alerts[-1]
    ev = fan.data.evidence
    assert ev["networks"] == {
        "count": 3,
        "sample": ["100.64.0.0/16", "100.65.0.0/16", "100.66.0.0/16"],
        "window_seconds": 86400,
    }
    assert "new networks" in fan.data.summary
    assert fan.severity == "medium"
    later = [request_factory(ts=t + 20 * HOUR + i * MINUTE, ip=f"100.{64 + i}.200.9") for i in range(30)]
    assert new_ip(cluster.feed(later)) == []


def test_fan_out_threshold_and_window_are_settings(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """With fanout_networks 5 in 1 h, four networks alert singly; networks an hour apart never fan out."""
    cluster = learned(ip={**FAST_LEARNING, "fanout_networks": 5, "fanout_window_seconds": 3600})
    t = T0 + 2 * HOUR
    burst = new_ip(cluster.feed([request_factory(ts=t + i, ip=f"172.{20 + i}.1.7") for i in range(5)]))
    assert [a.data.evidence.get("networks", {}).get("count") for a in burst] == [None, None, None, None, 5]
    slow = learned(ip={**FAST_LEARNING, "fanout_networks": 3, "fanout_window_seconds": 3600})
    spread = new_ip(slow.feed([request_factory(ts=t + i * 2 * HOUR, ip=f"172.{20 + i}.1.7") for i in range(4)]))
    assert len(spread) == 4
    assert all("networks" not in a.data.evidence for a in spread)


def test_with_geoip_the_network_is_the_asn(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord], geo: Geoip2Lookup
) -> None:
    """With GeoIP, a new range is folded under its ASN."""
    cluster = learned(geo=geo)
    [alert] = new_ip(cluster.feed([request_factory(ts=T0 + 2 * HOUR, ip="198.51.100.7")]))
    assert alert.data.evidence["network"] == "AS64500"


def test_network_prefixes_must_hold_the_ranges(config_factory: Callable[..., Any]) -> None:
    """A network smaller than a range is a config error naming both settings."""
    with pytest.raises(ConfigError, match="network_ipv4_prefix"):
        config_factory(ip={"network_ipv4_prefix": 28})


# -- trusted networks ---------------------------------------------------------------------------------------


def test_trusted_networks_are_known_and_named_in_the_next_alert(
    learned: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Requests from a tenant's trusted list never alert; the list's name and count show in the next alert."""
    trusted = {"global": {"corp": ["203.0.113.0/28"]}, "tenant": {"acme": {"ci-runners": ["172.20.0.0/16"]}}}
    cluster = learned(config=None, ip=FAST_LEARNING, trusted=trusted)
    t = T0 + 2 * HOUR
    quiet = [request_factory(ts=t + i, ip=f"172.20.{i}.7") for i in range(10)]
    quiet += [request_factory(ts=t + 20 + i, ip=f"203.0.113.{i}") for i in range(3)]
    assert new_ip(cluster.feed(quiet)) == []
    [alert] = new_ip(cluster.feed([request_factory(ts=t + MINUTE, ip="203.0.113.200")]))  # outside the /28
    assert alert.data.evidence["trusted"] == {"ci-runners": 10, "corp": 3}
    assert "172.20.0.0/24" not in cluster.states["acme/key-1"].detectors["ip"].ranges


def test_trusted_lists_of_one_tenant_do_not_apply_to_another(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """Tenant globex still alerts on acme's CI range."""
    cluster = cluster_factory(ip=FAST_LEARNING, trusted={"tenant": {"acme": {"ci": ["172.20.0.0/16"]}}})
    cluster.feed([lifecycle_factory(tenant="globex")])
    cluster.feed([request_factory(tenant="globex", ts=T0 + i * 10 * MINUTE) for i in range(8)])
    [alert] = new_ip(cluster.feed([request_factory(tenant="globex", ts=T0 + 2 * HOUR, ip="172.20.1.1")]))
    assert "trusted" not in alert.data.evidence
