"""Factories for the detection core's tests: events, engines, and a two-partition forward router."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.config import DetectionConfig, detection_config_from_mapping
from keywatch.core.engine import Engine
from keywatch.core.wiring import build_engine
from keywatch.geo import GeoLookup

# tests/ holds shared fixtures modules (geo_fixtures); it is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from coretest import T0, Cluster

from geo_fixtures import write_test_geoip


@pytest.fixture
def request_factory() -> Callable[..., RequestRecord]:
    """Build a request record; any field can be overridden, `ts` in epoch ms."""

    def make(**overrides: Any) -> RequestRecord:
        data: dict[str, Any] = {
            "ts": T0,
            "tenant": "acme",
            "key_id": "key-1",
            "env": "live",
            "ip": "192.0.2.10",
            "method": "GET",
            "path": "/v1/orders",
            "status": 200,
        }
        data.update(overrides)
        return RequestRecord.model_validate(data)

    return make


@pytest.fixture
def lifecycle_factory() -> Callable[..., LifecycleEvent]:
    """Build a lifecycle event (created by default); any field can be overridden, `ts` in epoch ms."""

    def make(**overrides: Any) -> LifecycleEvent:
        data: dict[str, Any] = {
            "type": "apiKey.created",
            "ts": T0,
            "tenant": "acme",
            "key_id": "key-1",
            "name": "billing-sync",
            "env": "live",
            "role": "read",
            "actor": "alice@example.com",
        }
        data.update(overrides)
        return LifecycleEvent.model_validate(data)

    return make


@pytest.fixture
def config_factory() -> Callable[..., DetectionConfig]:
    """Build a DetectionConfig from nested overrides, e.g. `config_factory(ip={"learning_requests": 0})`."""

    def make(**sections: Any) -> DetectionConfig:
        return detection_config_from_mapping(sections)

    return make


@pytest.fixture
def engine_factory(config_factory: Callable[..., DetectionConfig]) -> Callable[..., Engine]:
    """Build an engine with every detector; `geo` and detector settings can be given."""

    def make(*, geo: GeoLookup | None = None, config: DetectionConfig | None = None, **sections: Any) -> Engine:
        return build_engine(config or config_factory(**sections), "/keywatch/test", geo)

    return make


@pytest.fixture(scope="session")
def geoip_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny ASN + Country database pair, written once per session."""
    return write_test_geoip(tmp_path_factory.mktemp("geoip"))


@pytest.fixture
def cluster_factory(engine_factory: Callable[..., Engine]) -> Callable[..., Cluster]:
    """A Cluster around an engine built from the given settings."""

    def make(**kwargs: Any) -> Cluster:
        return Cluster(engine_factory(**kwargs))

    return make
