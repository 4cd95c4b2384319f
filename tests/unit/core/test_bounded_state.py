"""Per-key state stays bounded whatever the traffic: floods of distinct IPs, paths and statuses."""

from __future__ import annotations

import ipaddress

from coretest import DAY, MINUTE, T0, Cluster, state_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.config import detection_config_from_mapping
from keywatch.core.wiring import build_engine
from keywatch.geo import GeoInfo

# Worst case by construction (defaults): 64 ranges, 16 ASNs, 16 countries, 16 paths of 96 chars, 16 IPs,
# 64 suppression entries, the rate profile and error buckets: about 11 KB. Typical keys are far smaller.
MAX_STATE_BYTES = 16 * 1024


class FloodGeo:
    """Every /16 is its own ASN, every /12 its own country: worst case for the ASN and country maps."""

    def lookup(self, ip: str, range_key: str) -> GeoInfo:
        """A synthetic ASN and country derived from the address."""
        value = int(ipaddress.ip_address(ip))
        return GeoInfo(asn=value >> 16 & 0xFFFF, org="Example Org " + "x" * 60, country=f"Z{(value >> 20) % 26 + 65:c}")


def engine_cluster() -> Cluster:
    """A cluster whose key has finished learning almost at once, with geo on."""
    config = detection_config_from_mapping({"ip": {"learning_seconds": 0, "learning_requests": 0}})
    return Cluster(build_engine(config, "/keywatch/test", FloodGeo()))


ips = st.one_of(
    st.integers(min_value=0, max_value=2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
    st.integers(min_value=0, max_value=2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v))),
)
requests = st.builds(
    dict,
    offset=st.integers(min_value=-10 * MINUTE, max_value=40 * DAY),
    ip=ips,
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz/0123456789?=", min_size=1, max_size=300).map(lambda p: "/" + p),
    status=st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 409, 418, 429, 500, 503]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=400))
def test_state_stays_under_cap_for_any_traffic(batch: list[dict[str, object]]) -> None:
    """Any mix of addresses, paths, statuses and (out-of-order) times keeps the state under the cap."""
    cluster = engine_cluster()
    for item in sorted(batch, key=lambda r: int(str(r["offset"])) // (3 * DAY)):  # roughly ordered, jittered
        cluster.feed(
            [
                RequestRecord.model_validate(
                    {
                        "ts": T0 + int(str(item["offset"])),
                        "tenant": "acme",
                        "key_id": "key-1",
                        "env": "live",
                        "ip": item["ip"],
                        "method": "GET",
                        "path": item["path"],
                        "status": item["status"],
                    }
                )
            ]
        )
    assert state_bytes(cluster.states["acme/key-1"]) < MAX_STATE_BYTES


def test_flood_of_distinct_ips_paths_and_errors_is_bounded() -> None:
    """Six thousand requests from distinct ranges with distinct failing paths hit every cap, not more."""
    cluster = engine_cluster()
    cluster.feed(
        [
            LifecycleEvent.model_validate(
                {
                    "type": "apiKey.created",
                    "ts": T0 - DAY,
                    "tenant": "acme",
                    "key_id": "key-1",
                    "name": "n",
                    "env": "live",
                    "role": "r",
                    "actor": "a",
                }
            )
        ]
    )
    records = []
    for i in range(6_000):
        ip = (
            str(ipaddress.IPv4Address(0x0B000000 + i * 4099))
            if i % 2
            else str(ipaddress.IPv6Address((0x2001 << 112) + (i << 64) + 1))
        )
        records.append(
            RequestRecord.model_validate(
                {
                    "ts": T0 + i * 300,
                    "tenant": "acme",
                    "key_id": "key-1",
                    "env": "live",
                    "ip": ip,
                    "method": "GET",
                    "path": f"/v1/users/{i}/" + "p" * 200,
                    "status": (401, 403, 404, 429, 200)[i % 5],
                }
            )
        )
    cluster.feed(records)
    state = cluster.states["acme/key-1"]
    ip_state, err_state = state.detectors["ip"], state.detectors["errors"]
    assert (len(ip_state.ranges), len(ip_state.asns), len(ip_state.countries)) == (64, 16, 16)
    assert len(err_state.paths) <= 16
    assert len(err_state.ips) <= 16
    assert len(state.suppressed) <= 64
    assert state_bytes(state) < MAX_STATE_BYTES


def test_open_network_episodes_and_fan_out_networks_are_capped() -> None:
    """With the fan-out as high as it goes, a flood of new networks keeps at most 16 open episodes and 32
    recent networks, and the state stays under the bound."""
    config = detection_config_from_mapping(
        {"ip": {"learning_seconds": 0, "learning_requests": 0, "fanout_networks": 32, "suppress_seconds": 0}}
    )
    cluster = Cluster(build_engine(config, "/keywatch/test", FloodGeo()))
    base = {"tenant": "acme", "key_id": "key-1", "env": "live", "method": "GET", "path": "/v1/x", "status": 200}
    cluster.feed(
        RequestRecord.model_validate(
            {**base, "ts": T0 + i * 1000, "ip": str(ipaddress.IPv4Address(0x0B000000 + (i << 16)))}
        )
        for i in range(200)
    )
    ip_state = cluster.states["acme/key-1"].detectors["ip"]
    assert len(ip_state.open) == 16
    assert len(ip_state.recent) == 32
    assert state_bytes(cluster.states["acme/key-1"]) < MAX_STATE_BYTES
