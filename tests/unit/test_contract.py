"""The contract models: alert envelope, deterministic ids, checked-in schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from keywatch.contract.alerts import Alert, alert_id
from keywatch.contract.schemas import drifted, render, write_all
from keywatch.core import catalog

ROOT = Path(__file__).resolve().parents[2]


def _alert(**overrides: object) -> Alert:
    args: dict[str, object] = {
        "type": "apiKey.created",
        "id_parts": ("1767610800000", "alice"),
        "source": "/keywatch",
        "time": datetime(2026, 1, 5, 11, tzinfo=UTC),
        "tenant": "acme",
        "key_id": "k1",
        "env": "live",
        "severity": "low",
        "summary": "Key k1 was created.",
        "evidence": {"actor": "alice"},
    }
    args.update(overrides)
    return Alert.build(**args)  # type: ignore[arg-type]


def test_alert_is_a_cloudevent() -> None:
    """An alert serialises as a CloudEvents 1.0 structured event with subject tenant/key_id."""
    body = orjson.loads(_alert().model_dump_json())
    assert body["specversion"] == "1.0"
    assert {"id", "source", "type", "time", "subject", "datacontenttype", "data"} <= body.keys()
    assert body["subject"] == "acme/k1"
    assert body["time"] == "2026-01-05T11:00:00.000Z"
    assert body["data"]["runbook"].endswith("docs/alerts.md#created")
    assert body["data"]["severity"] == "low"


def test_alert_id_is_deterministic() -> None:
    """The same trigger gives the same id; a different trigger a different one."""
    assert _alert().id == _alert().id
    assert _alert().id != _alert(id_parts=("1767610800001", "alice")).id
    assert _alert().id != _alert(key_id="k2").id
    assert alert_id("a", "b") != alert_id("ab")


def test_alert_rejects_unknown_severity() -> None:
    """Severity is one of the five documented levels."""
    with pytest.raises(ValidationError):
        _alert(severity="urgent")


def test_alert_round_trips() -> None:
    """What keywatch writes, a consumer can read back with the same model."""
    alert = _alert()
    assert Alert.model_validate_json(alert.model_dump_json()) == alert


def test_checked_in_schemas_match_models() -> None:
    """schemas/ is regenerated whenever a model changes (run `keywatch schemas`)."""
    assert drifted(ROOT / "schemas", catalog.alert_types()) == []


def test_drift_is_detected(tmp_path: Path) -> None:
    """A stale or missing schema file is reported."""
    write_all(tmp_path, catalog.alert_types())
    (tmp_path / "alert.schema.json").write_text("{}\n")
    (tmp_path / "request.schema.json").unlink()
    assert sorted(drifted(tmp_path, catalog.alert_types())) == ["alert.schema.json", "request.schema.json"]


def test_schema_is_stable_json() -> None:
    """Rendering twice gives the same text (sorted keys)."""
    assert render(Alert, "serialization", catalog.alert_types()) == render(
        Alert, "serialization", catalog.alert_types()
    )
