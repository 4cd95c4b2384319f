"""One key, many services (apiKey.sharedAcrossServices): workloads that differ in product AND network, active
together in 3 windows of 30 minutes within 24 h, past the key's learning period."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from coretest import DAY, MINUTE, T0, Cluster, solo, state_bytes
from hypothesis import given, settings
from hypothesis import strategies as st

from keywatch.contract.alerts import Alert
from keywatch.contract.events import RequestRecord
from keywatch.core.codec import decode_state, encode_state
from keywatch.core.sharing import (
    ALERT_TYPE,
    MAX_OPEN_WINDOWS,
    MAX_PRODUCT,
    MAX_WORKLOADS,
    NAME,
    NO_AGENT,
    SPEC,
    Sharing,
    SharingConfig,
    fold_path,
    prefix_network,
    product_token,
)
from keywatch.geo import GeoInfo, GeoLookup, StaticGeoLookup
from keywatch.sim.generator import displace

WINDOW = 30 * MINUTE
LATENESS = 5 * MINUTE
BACKEND = ("okhttp/4.12.0", "10.1.2.")  # product okhttp, network 10.1.0.0/16
REPORTING = ("python-requests/2.31.0", "198.51.100.")  # python-requests, 198.51.0.0/16
START = T0 + 2 * DAY  # past learning (the key's first request is at T0)


def engine(geo: GeoLookup | None = None, **settings_: Any) -> Cluster:
    """A cluster running only the sharing detector (learning as configured, lateness 300 s)."""
    return Cluster(solo(SPEC, Sharing(SharingConfig(**settings_), geo=geo, lateness_ms=LATENESS)))


def record(ts: int, agent: str | None, ip: str, key_id: str = "key-1", **extra: Any) -> RequestRecord:
    """A request of acme's key at `ts`."""
    data: dict[str, Any] = {
        "ts": ts,
        "tenant": "acme",
        "key_id": key_id,
        "env": "live",
        "ip": ip,
        "method": "GET",
        "path": "/v1/orders/ord_1?limit=5",
        "status": 200,
        "user_agent": agent,
        "request_id": f"req_{ts:x}_{ip}",
    }
    data.update(extra)
    return RequestRecord.model_validate(data)


def history(key_id: str = "key-1") -> list[RequestRecord]:
    """60 requests of the backend alone on the key's first day: the key has learned by START."""
    return [record(T0 + i * 10 * MINUTE, BACKEND[0], BACKEND[1] + "10", key_id) for i in range(60)]


def in_windows(
    windows: Iterable[int], workloads: Iterable[tuple[str, str]], n: int = 6, start: int = START, key_id: str = "key-1"
) -> list[RequestRecord]:
    """`n` requests of each workload in each window (indexes counted from `start`), in event-time order."""
    out = []
    for w in windows:
        for agent, net in workloads:
            for i in range(n):
                ts = start + w * WINDOW + 60_000 + i * (WINDOW - 120_000) // max(1, n - 1)
                out.append(record(ts, agent, net + str(10 + i % 3), key_id))
    return sorted(out, key=lambda r: r.ts)


def run(cluster: Cluster, records: Iterable[RequestRecord], until: int | None = None) -> list[Alert]:
    """Feed the records, then run the ticks due at `until` (default: a day after the last record)."""
    feed = list(records)
    cluster.feed(feed)
    horizon = until if until is not None else max(int(r.ts.timestamp() * 1000) for r in feed) + DAY
    for subject, state in list(cluster.states.items()):
        outcome = cluster.engine.on_tick(state, horizon)
        cluster.states[subject] = outcome.state
        cluster.alerts.extend(outcome.alerts)
    return [a for a in cluster.alerts if a.type == ALERT_TYPE]


def test_two_services_in_three_windows_alert_once_with_evidence() -> None:
    """Backend and reporting job together in 3 windows: one medium alert when the third window is decided
    (its end plus the lateness), with each workload's share, times, folded paths and sample ids."""
    [alert] = run(engine(), history() + in_windows([0, 1, 2], [BACKEND, REPORTING]))
    assert alert.severity == "medium"
    assert alert.time == Alert.model_validate({**alert.model_dump(), "time": START + 3 * WINDOW + LATENESS}).time
    assert alert.data.runbook.endswith("#sharedacrossservices")
    ev = alert.data.evidence
    assert [(w["product"], w["network"], w["requests"], w["share"]) for w in ev["workloads"]] == [
        ("okhttp", "10.1.0.0/16", 18, 0.5),
        ("python-requests", "198.51.0.0/16", 18, 0.5),
    ]
    assert (ev["qualifying_windows"], ev["min_windows"], ev["window_minutes"]) == (3, 3, 30)
    assert ev["workloads"][0]["top_paths"] == [["/v1/orders", 15]]  # sampled from the second workload's arrival on
    assert 1 <= len(ev["workloads"][1]["sample_request_ids"]) <= 3
    assert ev["workloads"][0]["first_seen"] < ev["workloads"][0]["last_seen"]


def test_one_dimension_differing_never_counts() -> None:
    """Same product on two networks (autoscaling, a second region) or two products on one network (a
    sidecar) are one service."""
    regions = in_windows(range(6), [BACKEND, (BACKEND[0].replace("4.12.0", "4.9.1"), "198.51.100.")])
    sidecar = in_windows(range(6), [BACKEND, ("envoy/1.28", BACKEND[1])])
    assert run(engine(), history() + regions) == []
    assert run(engine(), history() + sidecar) == []


def test_two_windows_are_not_enough_three_are() -> None:
    """min_windows is 3."""
    assert run(engine(), history() + in_windows([0, 5], [BACKEND, REPORTING])) == []
    assert len(run(engine(), history() + in_windows([0, 5, 9], [BACKEND, REPORTING]))) == 1


def test_windows_more_than_a_period_apart_do_not_add_up() -> None:
    """Three qualifying windows spread over more than 24 h never alert."""
    assert run(engine(), history() + in_windows([0, 1, 49], [BACKEND, REPORTING])) == []
    assert len(run(engine(), history() + in_windows([0, 1, 47], [BACKEND, REPORTING]))) == 1


def test_fewer_than_min_requests_is_not_active() -> None:
    """4 requests in a window is not an active workload."""
    assert run(engine(), history() + in_windows([0, 1, 2, 3], [BACKEND, REPORTING], n=4)) == []


def test_learning_period_comes_first() -> None:
    """With the IP baseline's defaults (24 h and 50 requests): sharing on the key's first day is learned,
    sharing on its second day alerts."""
    first_day = in_windows(range(0, 40, 3), [BACKEND, REPORTING], start=T0)
    assert run(engine(), first_day) == []
    [alert] = run(engine(), first_day + in_windows(range(50, 60), [BACKEND, REPORTING], start=T0))
    assert alert.data.evidence["completing_window"] == "2024-03-05T02:00:00.000Z"  # window 52 from T0


def test_once_per_period_then_again() -> None:
    """Sharing all day alerts once per 24 h: ids from the window that completed the condition."""
    alerts = run(engine(), history() + in_windows(range(60), [BACKEND, REPORTING]))
    assert [a.data.evidence["completing_window"] for a in alerts] == [
        "2024-03-06T01:00:00.000Z",  # window 2
        "2024-03-07T01:00:00.000Z",  # window 50
    ]
    assert len({a.id for a in alerts}) == 2


def test_out_of_order_within_the_lateness_gives_the_same_alert() -> None:
    """Records delayed by up to the allowed lateness (300 s), across window boundaries: same ids and times."""
    records = history() + in_windows([0, 1, 2, 4, 7], [BACKEND, REPORTING], n=9)
    expected = [(a.id, a.time) for a in run(engine(), records)]
    assert len(expected) == 1
    for seed in range(5):
        shuffled = [
            r for _, r in displace(((int(r.ts.timestamp() * 1000), r) for r in records), LATENESS, random.Random(seed))
        ]
        assert shuffled != records
        assert [(a.id, a.time) for a in run(engine(), shuffled)] == expected


def test_boundary_records_late_but_within_lateness_count_in_their_window() -> None:
    """The 5th request of a workload in window 2 arrives after requests of window 3 (within 300 s): it still
    makes window 2 qualify."""
    base = history() + in_windows([0, 1], [BACKEND, REPORTING])
    w2 = [r for r in in_windows([2], [BACKEND, REPORTING], n=5)]
    last = w2.pop()  # the 5th reporting request, near the end of window 2
    early_w3 = [record(START + 3 * WINDOW + 10_000, BACKEND[0], BACKEND[1] + "10")]
    late = record(START + 3 * WINDOW - 30_000, last.user_agent, last.ip)
    [alert] = run(engine(), base + w2 + early_w3 + [late])
    [in_order] = run(engine(), sorted(base + w2 + early_w3 + [late], key=lambda r: r.ts))
    assert (alert.id, alert.time) == (in_order.id, in_order.time)


def test_reprocessing_gives_the_same_id_and_records_after_their_window_are_dropped() -> None:
    """A second replay of the same records gives the same alert id; a record beyond the lateness of a decided
    window is counted as late, never folded into a later decision."""
    records = history() + in_windows([0, 1, 2], [BACKEND, REPORTING])
    first, second = run(engine(), records), run(engine(), records)
    assert [a.id for a in first] == [a.id for a in second]
    assert len(first) == 1
    cluster = engine()
    run(cluster, records)
    cluster.feed([record(START + 10_000, BACKEND[0], BACKEND[1] + "10")])
    assert cluster.states["acme/key-1"].detectors[NAME].late == 1


def test_a_rotation_overlap_is_two_keys_of_one_workload() -> None:
    """Old and new key used by the same service on the same day: neither key has two workloads."""
    old = history("key-old") + in_windows(range(20), [BACKEND], key_id="key-old")
    new = history("key-new") + in_windows(range(20), [BACKEND], key_id="key-new")
    assert run(engine(), sorted(old + new, key=lambda r: r.ts)) == []


def test_browsers_are_ignored_and_missing_agents_are_a_product() -> None:
    """`Mozilla/...` is no service workload; requests without a user agent are the product `-`."""
    browser = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0", "198.51.100.")
    assert run(engine(), history() + in_windows(range(6), [BACKEND, browser])) == []
    [alert] = run(engine(), history() + in_windows(range(3), [BACKEND, (None, "198.51.100.")]))  # type: ignore[list-item]
    assert {w["product"] for w in alert.data.evidence["workloads"]} == {"okhttp", NO_AGENT}


def test_with_geoip_the_network_is_the_asn() -> None:
    """Two /16s of one ASN are one network; two ASNs are two."""
    one = StaticGeoLookup({"10.1.0.0/16": GeoInfo(asn=64500), "198.51.0.0/16": GeoInfo(asn=64500)})
    two = StaticGeoLookup({"10.1.0.0/16": GeoInfo(asn=64500), "198.51.0.0/16": GeoInfo(asn=64501)})
    records = history() + in_windows(range(3), [BACKEND, REPORTING])
    assert run(engine(geo=one), records) == []
    [alert] = run(engine(geo=two), records)
    assert {w["network"] for w in alert.data.evidence["workloads"]} == {"AS64500", "AS64501"}
    assert alert.data.evidence["network_basis"] == "asn"


def test_state_is_tiny_for_one_workload_and_survives_the_codec() -> None:
    """A key with one workload keeps one window with one workload; the state round-trips through the codec."""
    cluster = engine()
    run(cluster, history() + in_windows(range(10), [BACKEND], n=50), until=START)
    state = cluster.states["acme/key-1"]
    slot = state.detectors[NAME]
    assert len(slot.open) == 1
    assert len(slot.open[0].workloads) == 1
    assert len(encode_state(state)) - len(encode_state(type(state)(state.tenant, state.key_id, state.registry))) < 80
    assert decode_state(encode_state(state)).detectors[NAME] == slot


def test_state_stays_bounded_under_a_flood_of_agents_and_networks() -> None:
    """Thousands of distinct products and networks in a few windows: at most MAX_WORKLOADS per window,
    MAX_OPEN_WINDOWS windows, a few KB."""
    rng = random.Random(1)
    flood = [
        record(
            START + i * 1_000, f"tool{rng.getrandbits(40):x}/1.0", f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.1.1"
        )
        for i in range(5_000)
    ]
    cluster = engine()
    run(cluster, history() + flood, until=START)
    slot = cluster.states["acme/key-1"].detectors[NAME]
    assert len(slot.open) <= MAX_OPEN_WINDOWS
    assert all(len(w.workloads) <= MAX_WORKLOADS for w in slot.open)
    assert state_bytes(cluster.states["acme/key-1"]) < 4096
    assert decode_state(encode_state(cluster.states["acme/key-1"])).detectors[NAME] == slot


def test_the_kept_workloads_do_not_depend_on_arrival_order() -> None:
    """Beyond MAX_WORKLOADS a window keeps the smallest CRC-32s: the same set and counts in any order."""
    rng = random.Random(2)
    records = history() + [
        record(START + rng.randrange(WINDOW - 60_000), f"tool{j}/1.0", f"10.{j}.0.1")
        for j in range(20)
        for _ in range(6)
    ]
    states = []
    for seed in range(3):
        shuffled = history() + random.Random(seed).sample(records[60:], len(records) - 60)
        cluster = engine()
        run(cluster, shuffled, until=START)
        states.append(
            sorted((w.product, w.count) for w in cluster.states["acme/key-1"].detectors[NAME].open[0].workloads)
        )
    assert states[0] == states[1] == states[2]
    assert len(states[0]) == MAX_WORKLOADS


def test_network_and_path_helpers() -> None:
    """/16 for IPv4, /32 for IPv6; paths lose their query and everything after the second segment."""
    assert prefix_network("203.0.113.7") == "203.0.0.0/16"
    assert prefix_network("2001:db8:1:2::5") == "2001:db8::/32"
    assert fold_path("/v1/orders/ord_1?x=1") == "/v1/orders"
    assert fold_path("/v1/balance") == "/v1/balance"
    assert fold_path("/") == "/"
    assert len(fold_path("/" + "a" * 500)) == 96


def test_product_tokens() -> None:
    """The first product, lowercased, without version; browsers are None; no agent is `-`."""
    assert product_token("python-requests/2.31.0") == product_token("python-requests/2.28.1") == "python-requests"
    assert product_token("acme-billing-sync/3.4.0 python-requests/2.31.0") == "acme-billing-sync"
    assert product_token("Apache-HttpClient/5.2.1 (Java/21.0.2)") == "apache-httpclient"
    assert product_token("Mozilla/5.0 (compatible)") is None
    assert product_token("") == product_token(None) == product_token("   ") == product_token("(x)") == NO_AGENT


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.text(st.characters(blacklist_categories=())),  # surrogates and control characters too
        st.text(min_size=500, max_size=5000),
        st.just(""),
        st.none(),
    )
)
def test_any_user_agent_gives_a_bounded_token(agent: str | None) -> None:
    """Any unicode, huge or empty user agent: no crash, None (a browser) or a short printable token."""
    token = product_token(agent)
    assert token is None or (0 < len(token) <= MAX_PRODUCT and token.isprintable())


def test_a_workload_linking_two_others_makes_them_one_service() -> None:
    """A dual-stack service (its product on IPv4 and IPv6) with a sidecar on its IPv4 hosts: the sidecar and
    the IPv6 workload differ in both, but the service's IPv4 workload links them. Without it, two services."""
    app_v4, app_v6 = ("acme-fulfilment/2.1.0", "10.1.2."), ("acme-fulfilment/2.1.0", "2001:db8:1:2::")
    sidecar = ("envoy/1.28.0", "10.1.2.")
    assert run(engine(), history() + in_windows(range(6), [app_v4, app_v6, sidecar])) == []
    assert len(run(engine(), history() + in_windows(range(6), [app_v6, sidecar]))) == 1


def test_the_worker_detect_path_gives_replays_alert_for_disordered_records() -> None:
    """The worker's detect path (one partition, per-partition watermark, ticks) fed records up to the allowed
    lateness out of order emits the alert replay emits on the sorted records: same id, same time."""
    import asyncio

    import orjson

    from keywatch.config import Settings
    from keywatch.pipeline.ingest import Topics
    from keywatch.pipeline.processor import Processor
    from keywatch.replay import replay
    from keywatch.runtime import make_engine
    from keywatch.sinks.base import MemorySink

    records = history() + in_windows([0, 1, 2, 3], [BACKEND, REPORTING], n=8)
    records.append(record(START + 2 * DAY, BACKEND[0], BACKEND[1] + "10", "key-2"))  # moves the watermark on
    lines = [orjson.dumps(r.model_dump(mode="json", exclude_none=True)) for r in records]
    timed = [(int(r.ts.timestamp() * 1000), line) for r, line in zip(records, lines, strict=True)]
    disordered = [line for _, line in displace(timed, LATENESS, random.Random(3))]
    assert disordered != lines

    offline: list[Alert] = []
    replay(lines, [], make_engine(Settings()), offline.append)

    sink = MemorySink()
    processor = Processor(make_engine(Settings()), sink, Topics("requests", "lifecycle"))
    store: dict[bytes, bytes] = {}

    async def run_worker() -> None:
        out = processor.pack_batch([("requests", 0, i, None, line) for i, line in enumerate(disordered)], lambda s: 0)
        for value in out.keyed[0]:
            await processor.detect_message(None, value, store, 0)

    asyncio.run(run_worker())
    online = [Alert.model_validate_json(value) for _, value in sink.messages["alerts"]]

    def shared(alerts: list[Alert]) -> list[tuple[str, object]]:
        return sorted((a.id, a.time) for a in alerts if a.type == ALERT_TYPE)

    assert len(shared(offline)) == 1
    assert shared(online) == shared(offline)
