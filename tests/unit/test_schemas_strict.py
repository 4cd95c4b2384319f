"""The published schemas tell the truth, both ways: what keywatch emits and accepts validates; hand-made messages
that break the contract are rejected, by keywatch's schemas and by the CloudEvents 1.0 schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from keywatch.contract.alerts import Alert
from keywatch.contract.events import MAX_EVENT_TIME, MIN_EVENT_TIME, LifecycleEvent, RequestRecord
from keywatch.core import catalog
from tests.factories import lifecycle_dict, request_dict
from tests.schema_check import cloudevents_validator, errors, keywatch_validator


def _alert(**data: Any) -> dict[str, Any]:
    alert = Alert.build(
        type="apiKey.revoked",
        id_parts=("1767610800000",),
        source="/keywatch",
        time=datetime(2026, 1, 5, 11, tzinfo=UTC),
        tenant="acme",
        key_id="k1",
        env="live",
        severity="medium",
        summary="Key k1 was revoked.",
        evidence={"actor": "alice"},
    )
    document: dict[str, Any] = orjson.loads(alert.model_dump_json())
    document.update(data)
    return document


def test_an_emitted_alert_validates_everywhere() -> None:
    document = _alert()
    assert errors(keywatch_validator("alert"), document) == []
    assert errors(cloudevents_validator(), document) == []


def test_a_tenant_alert_validates() -> None:
    document = _alert(subject="acme")
    document["data"].update(key_id=None, env=None)
    assert errors(keywatch_validator("alert"), document) == []


@pytest.mark.parametrize(
    ("change", "official_too"),
    [
        ({"specversion": None}, True),  # removed below
        ({"id": ""}, True),
        ({"time": "yesterday"}, True),
        ({"source": "not a uri reference with spaces%"}, True),
        ({"type": "apiKey.madeUp"}, False),
        ({"time": "2026-01-05T11:00:00Z"}, False),  # no milliseconds: not how keywatch writes times
        ({"time": "2026-01-05T12:00:00.000+01:00"}, False),  # keywatch writes UTC
        ({"id": "not-a-uuid"}, False),
        ({"subject": "acme/k1/extra"}, False),
        ({"datacontenttype": "text/plain"}, False),
        ({"extra": 1}, False),
    ],
)
def test_broken_alerts_are_rejected(change: dict[str, Any], official_too: bool) -> None:
    document = _alert(**change)
    if change.get("specversion", "") is None:
        del document["specversion"]
    assert errors(keywatch_validator("alert"), document), change
    if official_too:
        assert errors(cloudevents_validator(), document), change


@pytest.mark.parametrize("drop", ["status", "episode_id", "runbook", "severity"])
def test_alert_data_fields_are_required(drop: str) -> None:
    document = _alert()
    del document["data"][drop]
    assert errors(keywatch_validator("alert"), document)


def test_every_registered_type_is_in_the_enum() -> None:
    enum = keywatch_validator("alert").schema["properties"]["type"]["enum"]
    assert sorted(enum) == sorted(catalog.alert_types())


_MIN_MS = int(MIN_EVENT_TIME.timestamp() * 1000)
_MAX_MS = int(MAX_EVENT_TIME.timestamp() * 1000)


@given(st.integers(min_value=_MIN_MS - 10**12, max_value=_MAX_MS + 10**12))
def test_epoch_millisecond_times_are_accepted_exactly_where_the_parser_accepts_them(ms: int) -> None:
    record = {**request_dict(), "ts": ms}
    try:
        RequestRecord.model_validate(record)
        parsed = True
    except ValidationError:
        parsed = False
    assert (errors(keywatch_validator("request"), record) == []) == parsed


@pytest.mark.parametrize(
    "ts", ["2026-01-05T09:00:00Z", "2026-01-05T10:00:00.123+01:00", 1767603600000, 1767603600000.5]
)
def test_requests_and_lifecycle_events_keywatch_accepts_validate(ts: object) -> None:
    request = {**request_dict(), "ts": ts}
    RequestRecord.model_validate(request)
    assert errors(keywatch_validator("request"), request) == []
    event = {**lifecycle_dict(), "ts": ts}
    LifecycleEvent.model_validate(event)
    assert errors(keywatch_validator("lifecycle"), event) == []


@pytest.mark.parametrize("ts", ["yesterday", "2026-01-05T09:00:00", True, None, "1767603600000"])
def test_requests_with_a_bad_time_are_rejected_by_schema_and_parser(ts: object) -> None:
    request = {**request_dict(), "ts": ts}
    with pytest.raises(ValidationError):
        RequestRecord.model_validate(request)
    assert errors(keywatch_validator("request"), request)
