"""The webhook's request: a structured-mode CloudEvent with a signature a receiver can check, and settings that
refuse an unsigned webhook."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cloudevents.v1.http import from_http
from hypothesis import given
from hypothesis import strategies as st

from keywatch.config import ConfigError, load_settings
from keywatch.contract.alerts import Alert
from keywatch.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink, signature, verify

SECRET = b"s" * 32


def _alert(n: int = 1) -> Alert:
    return Alert.build(
        type="apiKey.revoked",
        id_parts=(str(n),),
        source="/keywatch/test",
        time=datetime(2026, 1, 5, 11, tzinfo=UTC),
        tenant="acme",
        key_id=f"k{n}",
        env="live",
        severity="medium",
        summary="Key revoked.",
        evidence={},
    )


def test_the_request_is_a_signed_structured_cloudevent() -> None:
    sink = WebhookSink("http://127.0.0.1:1/hook", SECRET, clock=lambda: 1767610800.7)
    alert = _alert()
    request = sink._request([alert])
    assert request.url == "http://127.0.0.1:1/hook"
    assert request.headers["Content-Type"] == "application/cloudevents+json; charset=UTF-8"
    assert request.headers[TIMESTAMP_HEADER] == "1767610800"
    assert request.body == alert.model_dump_json().encode()
    assert verify(SECRET, request.headers, request.body, now=1767610900)
    event = from_http(dict(request.headers), request.body)  # the CloudEvents SDK reads it as structured mode
    assert event["id"] == alert.id
    assert event["type"] == "apiKey.revoked"
    assert event.data["tenant"] == "acme"


def test_a_receiver_refuses_a_replay_a_forgery_and_a_changed_body() -> None:
    body = _alert().model_dump_json().encode()
    headers = {TIMESTAMP_HEADER: "1000", SIGNATURE_HEADER: signature(SECRET, "1000", body)}
    assert verify(SECRET, headers, body, now=1100)
    assert not verify(SECRET, headers, body, now=1000 + 301)  # too old: a replay
    assert not verify(b"t" * 32, headers, body, now=1100)  # signed by someone else
    assert not verify(SECRET, headers, body + b" ", now=1100)
    assert not verify(SECRET, {**headers, TIMESTAMP_HEADER: "1001"}, body, now=1100)  # the stamp is signed too
    assert not verify(SECRET, {TIMESTAMP_HEADER: "1000"}, body, now=1100)
    assert not verify(SECRET, {**headers, TIMESTAMP_HEADER: "-5"}, body, now=1100)


@given(st.binary(max_size=2048), st.integers(min_value=0, max_value=2**40), st.data())
def test_any_body_verifies_and_no_changed_byte_does(body: bytes, stamp: int, data: st.DataObject) -> None:
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: signature(SECRET, str(stamp), body)}
    assert verify(SECRET, headers, body, now=stamp)
    if body:
        i = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        changed = body[:i] + bytes([body[i] ^ data.draw(st.integers(min_value=1, max_value=255))]) + body[i + 1 :]
        assert not verify(SECRET, headers, changed, now=stamp)


def test_a_webhook_without_a_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYWATCH_WEBHOOK_URL", "https://hooks.example/keywatch")
    monkeypatch.delenv("KEYWATCH_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="webhook_secret"):
        load_settings()
    monkeypatch.setenv("KEYWATCH_WEBHOOK_SECRET", "short")
    with pytest.raises(ConfigError, match="16"):
        load_settings()
    monkeypatch.setenv("KEYWATCH_WEBHOOK_SECRET", "x" * 16)
    assert load_settings().webhook_url == "https://hooks.example/keywatch"
    monkeypatch.setenv("KEYWATCH_WEBHOOK_URL", "ftp://nope")
    with pytest.raises(ConfigError, match="http"):
        load_settings()
