"""DetectionConfig: defaults, per-environment overrides, TOML loading, errors naming the setting."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from coretest import MINUTE, T0
from hypothesis import given
from hypothesis import strategies as st

from keywatch.config import ConfigError
from keywatch.contract.events import RequestRecord
from keywatch.core.config import default_detection_config, detection_config_from_mapping, load_detection_config
from keywatch.core.engine import Engine


def test_defaults_are_documented_values() -> None:
    """The defaults are the ones docs/alerts.md states."""
    config = default_detection_config()
    assert (config.ip.learning_seconds, config.ip.learning_requests, config.ip.forget_after_seconds) == (
        86400,
        50,
        30 * 86400,
    )
    assert (config.rate.min_per_minute, config.rate.min_ratio, config.rate.min_score) == (60, 3.0, 6.0)
    assert (config.errors.min_errors, config.errors.min_ratio, config.errors.window_minutes) == (20, 0.5, 5)
    assert (config.revoked.grace_seconds, config.revoked.suppress_seconds) == (60.0, 3600)


def test_key_hygiene_defaults_are_documented_values() -> None:
    """The key-hygiene rules' defaults are the ones docs/alerts.md states (the platform's rules: 90-day rotation,
    30 idle days, ...)."""
    config = default_detection_config()
    assert (config.rotation_age.max_age_days, config.rotation_age.repeat_days) == (90, 7)
    assert config.unused.idle_days == 30
    rotation = config.rotation
    assert (rotation.new_key_grace_hours, rotation.min_requests_per_hour, rotation.rollout_window_hours) == (24, 10, 72)
    assert (config.revocation_impact.min_requests, config.revocation_impact.window_minutes) == (5, 15)
    assert (config.environment.window_days, config.environment.new_to_tenant_window_days) == (30, 30)
    sharing = config.sharing
    assert (sharing.min_requests, sharing.window_minutes, sharing.min_windows, sharing.period_hours) == (5, 30, 3, 24)
    assert config.key_management.path_patterns == (r"^/v\d+/(api[-_]?keys|keys|credentials|tokens)(/|$)",)
    assert (config.lifecycle_burst.min_operations, config.lifecycle_burst.window_minutes) == (5, 10)
    assert (config.portal.portal_channels, config.portal.require_mfa) == (("portal",), True)
    sandbox = detection_config_from_mapping({"sandbox": {"rotation_age": {"max_age_days": 30}}})
    assert (
        sandbox.for_env("sandbox").rotation_age.max_age_days,
        sandbox.for_env("live").rotation_age.max_age_days,
    ) == (
        30,
        90,
    )


def test_env_override_applies_only_to_that_env() -> None:
    """A [detection.sandbox.rate] value changes sandbox settings and leaves live alone."""
    config = detection_config_from_mapping({"rate": {"min_per_minute": 100}, "sandbox": {"rate": {"min_ratio": 10}}})
    assert (config.for_env("sandbox").rate.min_ratio, config.for_env("sandbox").rate.min_per_minute) == (10, 100)
    assert config.for_env("live").rate.min_ratio == 3.0


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"rate": {"min_ratio": 0.5}}, "detection.rate.min_ratio"),
        ({"ip": {"ipv4_prefx": 24}}, "detection.ip.ipv4_prefx: unknown setting"),
        ({"live": {"errors": {"min_ratio": 2}}}, "detection.live.errors.min_ratio"),
        ({"sandbox": {"colour": 1}}, "detection.sandbox.colour"),
        ({"ip": {"learning_seconds": 100, "learning_max_seconds": 10}}, "learning_max_seconds (10)"),
    ],
)
def test_errors_name_the_bad_setting(data: dict[str, Any], named: str) -> None:
    """Validation errors say which setting is wrong by its dotted TOML name."""
    with pytest.raises(ConfigError) as info:
        detection_config_from_mapping(data)
    assert named in str(info.value)


def test_load_from_toml(tmp_path: Path) -> None:
    """The [detection] section and its env sub-tables are read from a TOML file."""
    path = tmp_path / "keywatch.toml"
    path.write_text(
        "[detection.ip]\nlearning_requests = 10\n[detection.live.revoked]\ngrace_seconds = 120\n", encoding="utf-8"
    )
    config = load_detection_config(path)
    assert config.ip.learning_requests == 10
    assert (config.for_env("live").revoked.grace_seconds, config.for_env("sandbox").revoked.grace_seconds) == (120, 60)


def test_load_reports_file_and_setting(tmp_path: Path) -> None:
    """A bad value in the file is reported with the file name and the setting."""
    path = tmp_path / "keywatch.toml"
    path.write_text("[detection.rate]\nmin_per_minute = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"keywatch\.toml: detection\.rate\.min_per_minute"):
        load_detection_config(path)


def test_missing_section_gives_defaults(tmp_path: Path) -> None:
    """A file without [detection], or no file at all, means the defaults."""
    path = tmp_path / "keywatch.toml"
    path.write_text("[other]\nx = 1\n", encoding="utf-8")
    assert load_detection_config(path) == default_detection_config() == load_detection_config(None)


def test_build_engine_uses_env_specific_settings(
    engine_factory: Callable[..., Engine], request_factory: Callable[..., RequestRecord]
) -> None:
    """With a sandbox override disabling a detector, sandbox keys skip it and live keys do not."""
    engine = engine_factory(sandbox={"revoked": {"enabled": False}})
    for env, expected in (("live", 1), ("sandbox", 0)):
        state = engine.new_state("acme", f"key-{env}")
        state.registry.status, state.registry.revoked_ms = "revoked", T0
        record = request_factory(ts=T0 + 10 * MINUTE, env=env, key_id=f"key-{env}")
        alerts = [a for a in engine.on_request(state, record).alerts if a.type == "apiKey.usedAfterRevoke"]
        assert len(alerts) == expected


# -- per-tenant overrides -----------------------------------------------------------------------------------


def test_tenant_overrides_win_over_env_overrides_over_defaults() -> None:
    """Precedence: defaults < [detection.<d>] < [detection.<env>.<d>] < [detection.tenant.<t>.<d>]."""
    config = detection_config_from_mapping(
        {
            "rate": {"min_per_minute": 100},
            "sandbox": {"rate": {"min_ratio": 10, "min_score": 8}},
            "tenant": {"acme": {"rate": {"min_ratio": 20}, "max_suppressions": 8}},
        }
    )
    acme_sandbox, acme_live = config.for_tenant("acme", "sandbox"), config.for_tenant("acme", "live")
    assert (acme_sandbox.rate.min_ratio, acme_sandbox.rate.min_score, acme_sandbox.rate.min_per_minute) == (20, 8, 100)
    assert (acme_live.rate.min_ratio, acme_live.rate.min_score, acme_live.max_suppressions) == (20, 6.0, 8)
    assert config.for_tenant("globex", "sandbox") == config.for_env("sandbox")


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"tenant": {"acme": {"colour": {"x": 1}}}}, "detection.tenant.acme.colour: unknown setting"),
        ({"tenant": {"acme": {"ip": {"fanout_networkz": 3}}}}, "detection.tenant.acme.ip.fanout_networkz"),
        ({"tenant": {"acme": {"ip": {"fanout_networks": 1}}}}, "detection.tenant.acme.ip.fanout_networks"),
    ],
)
def test_tenant_override_errors_name_the_setting(data: dict[str, Any], named: str) -> None:
    """An unknown detector or setting, or a bad value, under a tenant is an error naming it."""
    with pytest.raises(ConfigError) as info:
        detection_config_from_mapping(data)
    assert named in str(info.value)


def test_engine_picks_the_tenants_detectors(
    engine_factory: Callable[..., Engine], request_factory: Callable[..., RequestRecord]
) -> None:
    """A tenant that turns a detector off gets no alert from it; other tenants still do."""
    engine = engine_factory(tenant={"acme": {"revoked": {"enabled": False}}})
    for tenant, expected in (("acme", 0), ("globex", 1)):
        state = engine.new_state(tenant, "key-1")
        state.registry.status, state.registry.revoked_ms = "revoked", T0
        record = request_factory(ts=T0 + 10 * MINUTE, tenant=tenant)
        alerts = [a for a in engine.on_request(state, record).alerts if a.type == "apiKey.usedAfterRevoke"]
        assert len(alerts) == expected


def test_load_tenant_and_trusted_from_toml(tmp_path: Path) -> None:
    """[detection.tenant.<t>.<d>] and [detection.trusted] are read from a TOML file; describe() names each list."""
    path = tmp_path / "keywatch.toml"
    path.write_text(
        "[detection.tenant.acme.ip]\nfanout_networks = 5\n"
        '[detection.trusted.global]\ncorp-egress = ["203.0.113.0/24", "2001:db8:100::/48"]\n'
        '[detection.trusted.tenant.acme]\nci-runners = ["198.51.100.0/26"]\n',
        encoding="utf-8",
    )
    config = load_detection_config(path)
    assert config.for_tenant("acme", "live").ip.fanout_networks == 5
    assert config.trusted.describe() == [
        "trusted networks: global list 'corp-egress' holds 2",
        "trusted networks: tenant 'acme' list 'ci-runners' holds 1",
    ]
    acme = config.trusted.for_tenant("acme")
    assert acme.list_of("198.51.100.9", "198.51.100.0/24") == "ci-runners"
    assert acme.list_of("198.51.100.99", "198.51.100.0/24") is None
    assert acme.list_of("::ffff:203.0.113.5", "203.0.113.0/24") == "corp-egress"
    assert config.trusted.for_tenant("globex").list_of("198.51.100.9", "198.51.100.0/24") is None


# -- trusted networks: the CIDR boundary ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("networks", "named"),
    [
        (["300.1.1.0/24"], "detection.trusted.tenant.acme.ci.0: '300.1.1.0/24' is not an IP network"),
        (["198.51.100.5/24"], "host bits set (the network is 198.51.100.0/24)"),
        ("198.51.100.0/24", "detection.trusted.tenant.acme.ci: Input should be a valid list"),
    ],
)
def test_bad_trusted_network_names_the_list(networks: Any, named: str) -> None:
    """A bad CIDR (or a string instead of a list) is an error naming the list and the entry."""
    with pytest.raises(ConfigError) as info:
        detection_config_from_mapping({"trusted": {"tenant": {"acme": {"ci": networks}}}})
    assert named in str(info.value)


def test_unknown_trusted_section_is_an_error() -> None:
    """Only `global` and `tenant` exist under [detection.trusted]."""
    with pytest.raises(ConfigError, match=r"detection\.trusted\.tenants: unknown setting"):
        detection_config_from_mapping({"trusted": {"tenants": {}}})


@given(st.ip_addresses(), st.integers(min_value=0, max_value=128))
def test_any_cidr_parses_or_fails_with_one_clear_error(address: Any, prefix: int) -> None:
    """Every address/prefix either is a valid trusted network or a ConfigError naming the list, never a crash."""
    text = f"{address}/{prefix}"
    try:
        expected = str(ipaddress.ip_network(text, strict=True))
    except ValueError:
        expected = None
    data = {"trusted": {"global": {"lst": [text]}}}
    if expected is None:
        with pytest.raises(ConfigError, match=r"detection\.trusted\.global\.lst\.0"):
            detection_config_from_mapping(data)
    else:
        assert detection_config_from_mapping(data).trusted.global_["lst"] == [expected]


@given(st.text(max_size=30))
def test_arbitrary_text_as_cidr_never_crashes(text: str) -> None:
    """Any string is a network or an error naming the list."""
    try:
        config = detection_config_from_mapping({"trusted": {"global": {"lst": [text]}}})
    except ConfigError as exc:
        message = str(exc)
    else:
        message = "detection.trusted.global.lst.0 parsed"
        assert ipaddress.ip_network(config.trusted.global_["lst"][0])
    assert "detection.trusted.global.lst.0" in message
