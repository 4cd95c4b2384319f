"""The environment situations: realistic hosts for each positive and look-alike, labels where they may fire."""

from __future__ import annotations

import ipaddress

from keywatch.sim.profiles import PROFILES
from keywatch.sim.scenario import ENV_MISMATCH, NEW_IP, ScenarioConfig, build_plan, env_networks

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _both(nets: tuple[list[Network], list[Network]]) -> list[Network]:
    return [*nets[0], *nets[1]]


CONFIG = ScenarioConfig(seed=4, days=3.0, tenants=6, keys=60, learning_days=1.5, incidents_per_type=6)


def test_sandbox_and_live_apps_run_on_separate_networks() -> None:
    """Every tenant's sandbox networks and live networks are disjoint, and each environment has IPv4 ones."""
    plan = build_plan(CONFIG)
    for tenant in plan.tenants:
        sandbox, live = env_networks(tenant, "sandbox"), env_networks(tenant, "live")
        assert sandbox[0]
        assert live[0]
        assert not set(sandbox[0] + sandbox[1]) & set(live[0] + live[1])
    for key in plan.keys:
        allowed = {str(n) for n in _both(env_networks(key.tenant, key.env))}
        assert {h.network for h in key.app.hosts} <= allowed, key.key_id


def test_positives_use_the_other_environments_hosts_and_the_stolen_key_an_unknown_network() -> None:
    """A mismatch label's requests come from a host of the tenant's other environment (and the same requests
    carry the key's new-range label); a stolen key's requests come from a /16 no tenant uses, after the
    tenant's first day."""
    plan = build_plan(CONFIG, PROFILES["default"])
    mismatches = [i for i in plan.incidents if i.type == ENV_MISMATCH]
    assert len(mismatches) == 6
    for incident in mismatches:
        key = incident.key
        other = "live" if key.env == "sandbox" else "sandbox"
        nets = _both(env_networks(key.tenant, other))
        for _, record in incident.records:
            assert any(ipaddress.ip_address(record[3]) in n for n in nets)
        assert any(i.type == NEW_IP and i.key is key and i.start_ms == incident.start_ms for i in plan.incidents)
    stolen = [i for i in plan.incidents if i.type == NEW_IP and "stolen" in i.description]
    assert len(stolen) == 2
    for incident in stolen:
        assert incident.start_ms - plan.config.start_ms >= 24 * 3_600_000
        assert incident.key.created_ms <= incident.start_ms
        assert all(not rec[3].startswith("10.") for _, rec in incident.records)
