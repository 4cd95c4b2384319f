"""Settings: defaults, environment over file, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from keywatch.config import ConfigError, load_settings


def test_defaults_are_local() -> None:
    """Without configuration keywatch talks to the local broker with the documented topic names."""
    settings = load_settings()
    assert settings.bootstrap_list == ["127.0.0.1:19092"]
    assert (settings.topic_requests, settings.topic_lifecycle) == ("api.requests", "apikey.lifecycle")
    assert (settings.topic_alerts, settings.topic_dlq) == ("keywatch.alerts", "keywatch.dlq")


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TOML [worker] table sets values; KEYWATCH_* environment variables win over it."""
    config = tmp_path / "kw.toml"
    config.write_text('[worker]\npartitions = 8\ntopic_alerts = "sec.alerts"\n')
    monkeypatch.setenv("KEYWATCH_PARTITIONS", "2")
    settings = load_settings(config)
    assert settings.partitions == 2
    assert settings.topic_alerts == "sec.alerts"


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("KEYWATCH_BOOTSTRAP_SERVERS", "localhost", "'localhost' is not host:port"),
        ("KEYWATCH_PARTITIONS", "0", "KEYWATCH_PARTITIONS"),
        ("KEYWATCH_TOPIC_ALERTS", "bad topic!", "not a legal Kafka topic name"),
        ("KEYWATCH_STORE", "redis://", "KEYWATCH_STORE"),
    ],
)
def test_bad_environment_value_is_named(monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str) -> None:
    """A wrong environment value fails with a message naming the variable and the problem."""
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert fragment in str(err.value)
    assert env in str(err.value)


def test_bad_file_value_names_file_and_key(tmp_path: Path) -> None:
    """A wrong value in the file names the file and the key; an unknown key is called out."""
    config = tmp_path / "kw.toml"
    config.write_text("[worker]\npartitions = -1\npartitons = 3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    text = str(err.value)
    assert f"{config} [worker].partitions" in text
    assert f"{config} [worker].partitons: is not a keywatch setting" in text


def test_missing_or_broken_file(tmp_path: Path) -> None:
    """A missing file or invalid TOML is a clear error, not a traceback."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[worker\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_progress_settings_have_sane_defaults() -> None:
    """Input topics are waited for, a stall counts after two minutes, the watchdog trips after ten."""
    settings = load_settings()
    assert settings.missing_input_topics == "wait"
    assert (settings.stall_seconds, settings.watchdog_seconds) == (120.0, 600.0)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"KEYWATCH_MISSING_INPUT_TOPICS": "create"}, "KEYWATCH_MISSING_INPUT_TOPICS"),
        ({"KEYWATCH_STALL_SECONDS": "0"}, "KEYWATCH_STALL_SECONDS"),
        ({"KEYWATCH_WATCHDOG_SECONDS": "-1"}, "KEYWATCH_WATCHDOG_SECONDS"),
        ({"KEYWATCH_STALL_SECONDS": "300", "KEYWATCH_WATCHDOG_SECONDS": "60"}, "at least stall_seconds"),
    ],
)
def test_bad_progress_settings_are_named(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str) -> None:
    """An unknown missing-topic policy, a non-positive stall time or a watchdog shorter than the stall is refused."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert fragment in str(err.value)


def test_watchdog_can_be_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """KEYWATCH_WATCHDOG_SECONDS=0 turns the watchdog off whatever the stall time."""
    monkeypatch.setenv("KEYWATCH_STALL_SECONDS", "300")
    monkeypatch.setenv("KEYWATCH_WATCHDOG_SECONDS", "0")
    assert load_settings().watchdog_seconds == 0


def test_source_and_runbook_base_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alerts carry the deployment's source and runbook base; bad values are one clear error each."""
    from datetime import UTC, datetime

    from keywatch.config import ConfigError, load_settings
    from keywatch.contract.events import LifecycleEvent
    from keywatch.runtime import make_engine

    monkeypatch.setenv("KEYWATCH_ALERT_SOURCE", "/keywatch/prod-eu")
    monkeypatch.setenv("KEYWATCH_RUNBOOK_BASE_URL", "https://wiki.example/security/keywatch/")
    settings = load_settings()
    event = LifecycleEvent.model_validate(
        {"type": "apiKey.created", "ts": datetime(2026, 1, 5, tzinfo=UTC), "tenant": "acme", "key_id": "k1",
         "name": "svc", "env": "live", "role": "read", "actor": "alice"}
    )  # fmt: skip
    (alert,) = make_engine(settings).on_lifecycle(None, event).alerts
    assert alert.source == "/keywatch/prod-eu"
    assert alert.data.runbook == "https://wiki.example/security/keywatch#created"
    monkeypatch.setenv("KEYWATCH_RUNBOOK_BASE_URL", "wiki/keywatch#x")
    with pytest.raises(ConfigError, match="KEYWATCH_RUNBOOK_BASE_URL"):
        load_settings()
    monkeypatch.delenv("KEYWATCH_RUNBOOK_BASE_URL")
    monkeypatch.setenv("KEYWATCH_ALERT_SOURCE", "/key watch")
    with pytest.raises(ConfigError, match="KEYWATCH_ALERT_SOURCE"):
        load_settings()
