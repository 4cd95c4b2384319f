"""KEYWATCH_REPLICATION_FACTOR: validated, and handed to faust for its changelog and internal topics."""

from __future__ import annotations

import pytest

from keywatch.config import ConfigError, Settings, load_settings
from keywatch.runtime import make_engine
from keywatch.stream.app import create_app
from keywatch.stream.kafka_internals import faust_internal_topics


def test_default_is_one_replica() -> None:
    """Without configuration the factor is 1, what a single local broker can hold."""
    assert load_settings().replication_factor == 1


@pytest.mark.parametrize("value", ["0", "-3", "three"])
def test_a_factor_below_one_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A factor that is not a whole number of at least 1 stops the configuration, naming the variable."""
    monkeypatch.setenv("KEYWATCH_REPLICATION_FACTOR", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "KEYWATCH_REPLICATION_FACTOR" in str(err.value)


def test_faust_creates_its_topics_with_the_factor() -> None:
    """The app declares its changelog and leader topic with the configured factor; both are named for the check."""
    settings = Settings(app_id="rf-unit", replication_factor=3, metrics_port=0)
    app = create_app(settings, make_engine(settings))
    assert app.conf.topic_replication_factor == 3
    assert faust_internal_topics(app) == ["rf-unit-keys-changelog", "rf-unit-__assignor-__leader"]
