"""DetectionConfig: defaults, per-environment overrides, TOML loading, errors naming the setting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from coretest import MINUTE, T0

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
