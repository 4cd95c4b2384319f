"""The generated scenario: deterministic, ordered, in the contract's form, and honest about its labels."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from datetime import datetime

import orjson
import pytest

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.sim.audit import audit, network_of
from keywatch.sim.labels import read_labels
from keywatch.sim.scenario import (
    AFTER_REVOKE,
    ERROR_CLUSTER,
    INCIDENT_TYPES,
    KEY_MANAGEMENT,
    PLANNED_TYPES,
    PRIVILEGE,
    ROTATION_GRACE_MS,
    ScenarioConfig,
    build_plan,
)
from tests.unit.sim.conftest import SMALL, ScenarioFactory, read_jsonl

ALLOWED_NETWORKS = [
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "10.0.0.0/8", "172.16.0.0/12", "2001:db8::/32")
]
FILES = ("requests.jsonl", "lifecycle.jsonl", "labels.jsonl", "networks.json", "scenario.json")


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_same_seed_gives_identical_files(scenario_factory: ScenarioFactory) -> None:
    """Two runs with the same seed and options write byte-identical files."""
    first = scenario_factory()
    second = scenario_factory(fresh=True)
    for name in FILES[:4]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_other_seed_gives_other_traffic(scenario_factory: ScenarioFactory) -> None:
    """A different seed draws a different scenario."""
    assert (scenario_factory(seed=1) / "requests.jsonl").read_bytes() != (
        scenario_factory(seed=2) / "requests.jsonl"
    ).read_bytes()


@pytest.mark.parametrize("name", ["requests.jsonl", "lifecycle.jsonl", "labels.jsonl"])
def test_files_are_sorted_by_event_time(scenario_factory: ScenarioFactory, name: str) -> None:
    """requests, lifecycle events and labels are each in event-time order."""
    field = "start" if name == "labels.jsonl" else "ts"
    times = [_ms(row[field]) for row in read_jsonl(scenario_factory() / name)]
    assert times
    assert times == sorted(times)


def test_every_request_is_a_contract_record_in_its_json_form(scenario_factory: ScenarioFactory) -> None:
    """Each request line validates as RequestRecord and equals the model's own JSON serialisation (absent
    browser headers left out; every other field is always there)."""
    lines = (scenario_factory() / "requests.jsonl").read_bytes().splitlines()
    assert len(lines) > 10_000
    for line in lines:
        record = RequestRecord.model_validate_json(line)
        assert record.model_dump_json(exclude_none=True).encode() == line


def test_every_lifecycle_event_is_a_contract_event_in_its_json_form(scenario_factory: ScenarioFactory) -> None:
    """Each lifecycle line validates as LifecycleEvent and equals the model's own JSON serialisation."""
    lines = (scenario_factory() / "lifecycle.jsonl").read_bytes().splitlines()
    kinds = {LifecycleEvent.model_validate_json(line).type for line in lines}
    for line in lines:
        assert LifecycleEvent.model_validate_json(line).model_dump_json().encode() == line
    assert {"apiKey.created", "apiKey.revoked"} <= kinds


def test_addresses_come_only_from_documentation_and_private_ranges(scenario_factory: ScenarioFactory) -> None:
    """No request or lifecycle event carries a real public address."""
    out = scenario_factory()
    ips = {row["ip"] for row in read_jsonl(out / "requests.jsonl")}
    ips |= {row["ip"] for row in read_jsonl(out / "lifecycle.jsonl") if row["ip"]}
    for ip in ips:
        addr = ipaddress.ip_address(ip)
        assert any(addr in net for net in ALLOWED_NETWORKS if net.version == addr.version), ip
    assert any(":" in ip for ip in ips), "some IPv6 traffic"


def test_status_mix_is_mostly_success(scenario_factory: ScenarioFactory) -> None:
    """Outside incidents, 4xx are a few percent spread over several codes and 5xx are rare."""
    rows = read_jsonl(scenario_factory() / "requests.jsonl")
    statuses = [row["status"] for row in rows]
    share_4xx = sum(400 <= s < 500 for s in statuses) / len(statuses)
    share_5xx = sum(s >= 500 for s in statuses) / len(statuses)
    assert 0.004 < share_4xx < 0.04
    assert 0 < share_5xx < 0.005
    assert {400, 401, 403, 404, 429} <= set(statuses)


def test_labels_cover_every_type_after_the_learning_period(scenario_factory: ScenarioFactory) -> None:
    """Every planned incident type is injected, on distinct keys, and none starts before the learning period
    ends; a scope probe's key-management requests are labelled on the probe's key."""
    config = ScenarioConfig(**SMALL)
    labels = read_labels(scenario_factory() / "labels.jsonl")
    assert set(PLANNED_TYPES) <= {label.type for label in labels} <= set(INCIDENT_TYPES)
    own = [label for label in labels if label.type in PLANNED_TYPES]
    assert len({label.subject for label in own}) == len(own)
    probes = {label.subject for label in labels if label.type == ERROR_CLUSTER}
    assert {label.subject for label in labels if label.type == KEY_MANAGEMENT} <= probes
    for label in labels:
        assert _ms(label.start.isoformat()) >= config.learning_end_ms
        assert label.start <= label.end


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_audit_finds_every_label_supported_and_nothing_unlabelled(scenario_factory: ScenarioFactory, seed: int) -> None:
    """Each label crosses its threshold in the data, and no unlabelled stretch does."""
    out = scenario_factory(seed=seed)
    report = audit(out, ScenarioConfig(**{**SMALL, "seed": seed}).learning_end_ms)
    assert report.unsupported == {}
    assert report.unlabelled == []
    assert len(report.confirmed) == len(read_labels(out / "labels.jsonl"))


def test_used_after_revoke_labels_have_requests_well_after_the_revocation(scenario_factory: ScenarioFactory) -> None:
    """For each usedAfterRevoke label the key was revoked more than 5 minutes before the label's requests."""
    out = scenario_factory()
    revoked = {
        (e["tenant"], e["key_id"]): _ms(e["ts"])
        for e in read_jsonl(out / "lifecycle.jsonl")
        if e["type"] == "apiKey.revoked"
    }
    requests = defaultdict(list)
    for row in read_jsonl(out / "requests.jsonl"):
        requests[row["tenant"], row["key_id"]].append(_ms(row["ts"]))
    labels = [label for label in read_labels(out / "labels.jsonl") if label.type == AFTER_REVOKE]
    assert labels
    for label in labels:
        at = revoked[label.tenant, label.key_id]
        after = [ts for ts in requests[label.tenant, label.key_id] if ts > at]
        assert after
        assert min(after) > at + 5 * 60_000
        assert min(after) == _ms(label.start.isoformat())


def test_benign_rotations_stop_using_the_old_key_by_revocation(scenario_factory: ScenarioFactory) -> None:
    """A rotated key not labelled as used-after-revoke has no request later than its revocation + grace."""
    out = scenario_factory(days=3.0, keys=80, tenants=6)
    lifecycle = read_jsonl(out / "lifecycle.jsonl")
    rotated = {(e["tenant"], e["replaces_key_id"]) for e in lifecycle if e["replaces_key_id"]}
    revoked = {(e["tenant"], e["key_id"]): _ms(e["ts"]) for e in lifecycle if e["type"] == "apiKey.revoked"}
    labelled = {(label.tenant, label.key_id) for label in read_labels(out / "labels.jsonl")}
    benign = {k: v for k, v in revoked.items() if k in rotated and k not in labelled}
    assert benign
    last: dict[tuple[str, str], int] = {}
    for row in read_jsonl(out / "requests.jsonl"):
        key = (row["tenant"], row["key_id"])
        if key in benign:
            last[key] = _ms(row["ts"])
    for key, at in benign.items():
        assert last.get(key, 0) <= at + ROTATION_GRACE_MS, key


def test_rotation_hands_traffic_to_the_same_hosts(scenario_factory: ScenarioFactory) -> None:
    """The new key of a rotation is used from the networks, and mostly the very addresses, of the old key."""
    out = scenario_factory(days=3.0, keys=80, tenants=6)
    lifecycle = read_jsonl(out / "lifecycle.jsonl")
    pairs = {(e["tenant"], e["key_id"]): e["replaces_key_id"] for e in lifecycle if e["replaces_key_id"]}
    ips: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in read_jsonl(out / "requests.jsonl"):
        ips[row["tenant"], row["key_id"]].add(row["ip"])
    checked = 0
    for (tenant, new), old in pairs.items():
        if ips[tenant, new] and ips[tenant, old]:
            assert {network_of(ip) for ip in ips[tenant, new]} <= {network_of(ip) for ip in ips[tenant, old]}
            assert ips[tenant, new] & ips[tenant, old]
            checked += 1
    assert checked


def test_plan_is_sized_by_the_options() -> None:
    """Keys, tenants and incidents per type follow the options."""
    plan = build_plan(ScenarioConfig(days=3.0, tenants=7, keys=100, incidents_per_type=3))
    assert len(plan.tenants) == 7
    assert 100 <= len(plan.keys) <= 130
    by_type = defaultdict(int)
    for incident in plan.incidents:
        by_type[incident.type] += 1
    assert {t: by_type[t] for t in PLANNED_TYPES} == dict.fromkeys(PLANNED_TYPES, 3)
    # scope probes on key-management paths; the benign plan's widening scope changes are escalations
    assert set(by_type) <= {*PLANNED_TYPES, KEY_MANAGEMENT, PRIVILEGE}


def test_scale_multiplies_the_volume(scenario_factory: ScenarioFactory) -> None:
    """--scale 2 roughly doubles the number of requests."""
    base = len((scenario_factory() / "requests.jsonl").read_bytes().splitlines())
    doubled = len((scenario_factory(scale=2.0) / "requests.jsonl").read_bytes().splitlines())
    assert 1.7 < doubled / base < 2.3


def test_scenario_json_summarises_the_run(scenario_factory: ScenarioFactory) -> None:
    """scenario.json records the options and the counts actually written."""
    out = scenario_factory()
    summary = orjson.loads((out / "scenario.json").read_bytes())
    assert summary["config"]["seed"] == SMALL["seed"]
    assert summary["summary"]["requests"] == len((out / "requests.jsonl").read_bytes().splitlines())
