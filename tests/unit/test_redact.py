"""Secrets never survive ingest: not in state, alerts, dead letters, keyed messages or logs."""

from __future__ import annotations

import base64
import logging

import orjson
import pytest

from keywatch.core.engine import Engine
from keywatch.pipeline.processor import Processor, Topics
from keywatch.redact import Redactor
from keywatch.sinks.base import MemorySink
from tests.factories import as_bytes, lifecycle_dict, request_dict

SECRETS = {
    "bearer": ("Bearer AbCdEf0123456789xyz", "AbCdEf0123456789xyz"),
    "jwt": ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlX2hlcmU", "eyJhbGciOiJIUzI1NiJ9"),
    "query": ("/v1/orders?api_key=s3cr3tvalue99&x=1", "s3cr3tvalue99"),
    "prefixed": ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
    "entropy": ("Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MGFiY2RlZg", "Zm9vYmFyQmF6UXV4MTIzNDU2Nzg5MGFiY2RlZg"),
    "password": ("password=hunter2hunter2", "hunter2hunter2"),
}
BENIGN = [
    "/v1/customers/42",
    "key_live_1",
    "550e8400-e29b-41d4-a716-446655440000",
    "acme-sdk/1.2 (linux; python 3.11)",
    "0123456789abcdef0123456789abcdef0123",  # a lowercase hex id is an id, not a secret
    "/v1/password/reset",
]


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_secret_is_replaced_by_keyed_hash(name: str) -> None:
    """Each kind of secret is replaced; the same secret under the same key gets the same hash."""
    text, secret = SECRETS[name]
    redactor = Redactor(b"test-key-0123456789")
    out = redactor.redact(text.encode())
    assert secret.encode() not in out
    assert b"redacted:" in out
    assert redactor.redact(text.encode()) == out
    assert Redactor(b"another-key-987654321").redact(text.encode()) != out


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_values_are_left_alone(text: str) -> None:
    """Paths, key ids, uuids, user agents and lowercase hex ids are not mistaken for secrets."""
    assert Redactor(b"k" * 16).redact(text.encode()) == text.encode()


def test_redaction_keeps_json_valid() -> None:
    """A redacted JSON record is still the same JSON with only the secret replaced."""
    raw = as_bytes(request_dict(user_agent='curl "Bearer AbCdEf0123456789xyz"', path="/x?token=abcdef123456"))
    out = orjson.loads(Redactor(b"k" * 16).redact(raw))
    assert out["user_agent"].startswith('curl "Bearer redacted:')
    assert out["path"].startswith("/x?token=redacted:")


async def test_no_output_carries_a_secret(caplog: pytest.LogCaptureFixture) -> None:
    """Secrets in every field of valid and invalid records are absent from keyed, alerts, DLQ, state and logs."""
    caplog.set_level(logging.DEBUG)
    sink = MemorySink()
    processor = Processor(Engine(source="/t"), sink, Topics("req", "life"), redactor=Redactor(b"k" * 16))
    bearer, prefixed = SECRETS["bearer"][0], SECRETS["prefixed"][0]
    records = [
        ("req", request_dict(path=f"/v1/x?access_token={prefixed}", user_agent=bearer, request_id=prefixed)),
        ("req", request_dict(ip=bearer)),  # invalid: goes to the DLQ, reason quotes the (redacted) value
        ("req", request_dict(key_id=prefixed)),
        ("life", lifecycle_dict(name=f"ci {bearer}", actor=prefixed)),
        ("life", lifecycle_dict(key_id=prefixed, env="prod")),  # invalid
    ]
    for offset, (topic, record) in enumerate(records):
        await processor.ingest(topic, 0, offset, prefixed.encode(), as_bytes(record))
    store: dict[bytes, bytes] = {}
    for key, value in list(sink.messages["keyed"]):
        assert key is not None
        await processor.detect(key, value, store)
    assert len(sink.messages["dlq"]) == 2
    assert len(sink.messages["alerts"]) == 1
    outputs = [k or b"" for ch in sink.messages.values() for k, _ in ch]
    outputs += [v for ch in sink.messages.values() for _, v in ch]
    outputs += [base64.b64decode(orjson.loads(v)["payload_b64"]) for _, v in sink.messages["dlq"]]
    outputs += list(store) + list(store.values())
    outputs.append(caplog.text.encode())
    for secret in ("AbCdEf0123456789xyz", "4eC39HqLyjWDarjtT1zdp7dc"):
        for blob in outputs:
            assert secret.encode() not in blob
    assert any(b"redacted:" in blob for blob in outputs)
