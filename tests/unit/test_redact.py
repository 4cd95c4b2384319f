"""Secrets never survive ingest: not in state, alerts, dead letters, keyed messages or logs."""

from __future__ import annotations

import base64
import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keywatch.config import Settings
from keywatch.core.engine import Engine
from keywatch.pipeline.ingest import Accepted, Topics
from keywatch.pipeline.processor import Processor
from keywatch.redact import Redactor
from keywatch.runtime import make_engine
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


# -- secrets behind escapes (JSON \uXXXX, \/, percent-encoding) ------------------------------------------------

GO_PATH = rb'{"path":"/v1/x?a=1\u0026access_token=atok4plant9f8e7d6c5b4a3"}'
GO_TOKEN = b"atok4plant9f8e7d6c5b4a3"


def _readable(blob: bytes) -> str:
    """`blob` as a reader may decode it: JSON escapes and percent-encoding undone, twice over."""
    text = blob.decode("utf-8", "replace")
    for _ in range(2):
        text = unquote_plus(re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text))
        text = text.replace("\\/", "/")
    return text


def test_go_escaped_ampersand_does_not_hide_a_query_token() -> None:
    """Go's `\\u0026` for `&` before `access_token=` no longer hides the token: the decoded value is redacted."""
    redactor = Redactor(b"k" * 16)
    out = redactor.redact_payload(GO_PATH)
    assert GO_TOKEN.decode() not in _readable(out)
    assert orjson.loads(out)["path"] == "/v1/x?a=1&access_token=" + redactor.token_for(GO_TOKEN).decode()
    assert GO_TOKEN not in redactor.redact(GO_PATH)  # byte-wise too


def _processor(sink: MemorySink) -> Processor:
    return Processor(
        make_engine(Settings()),
        sink,
        Topics("req", "life"),
        redactor=Redactor(b"k" * 16),
        clock=lambda: datetime(2026, 1, 9, tzinfo=UTC),
    )


async def _through(processor: Processor, records: list[tuple[str, bytes | None, bytes]]) -> dict[bytes, bytes]:
    """Ingest (batched) and detect the records; the state store."""
    batch = processor.pack_batch(
        [(topic, 0, i, key, value) for i, (topic, key, value) in enumerate(records)], lambda _: 0
    )
    store: dict[bytes, bytes] = {}
    for letter in batch.dead_letters:
        await processor.sink.send("dlq", letter.key, letter.value)
    for message in batch.keyed.get(0, []):
        await processor.sink.send("keyed", None, message)
        await processor.detect_message(None, message, store, 0)
    return store


def _everything(sink: MemorySink, store: dict[bytes, bytes], log: str) -> str:
    blobs = [part or b"" for ch in sink.messages.values() for pair in ch for part in pair]
    for _, value in sink.messages["dlq"]:
        letter = orjson.loads(value)
        blobs += [base64.b64decode(letter[f]) for f in ("payload_b64", "key_b64") if letter[f]]
    blobs += [*store, *store.values(), log.encode()]
    return "\n".join(_readable(b) for b in blobs)


async def test_go_escaped_query_token_reaches_neither_keyed_nor_new_ip_evidence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Go-escaped query token is redacted in the keyed records and in usedFromNewIp's evidence `path`."""
    caplog.set_level(logging.DEBUG)
    sink = MemorySink()
    path = "/v1/x?a=1\\u0026access_token=" + GO_TOKEN.decode()
    records = [
        ("req", None, _json_with(request_dict(ts="2025-12-30T10:00:00Z", ip="192.0.2.10"), path=path)),
        ("req", None, _json_with(request_dict(ts="2026-01-08T10:00:00Z", ip="203.0.113.9"), path=path)),
    ]  # nine days apart: past the longest learning period, the second network is new
    store = await _through(_processor(sink), records)
    (alert,) = [orjson.loads(v) for _, v in sink.messages["alerts"]]
    assert alert["type"] == "apiKey.usedFromNewIp"
    assert alert["data"]["evidence"]["path"].startswith("/v1/x?a=1&access_token=redacted:")
    assert GO_TOKEN.decode() not in _everything(sink, store, caplog.text)


def _json_with(record: dict[str, Any], **raw_fields: str) -> bytes:
    """`record` as JSON with some fields' values written as given (escapes kept as JSON escapes)."""
    body = orjson.dumps({k: v for k, v in record.items() if k not in raw_fields})[:-1]
    return body + b"".join(b',"' + k.encode() + b'":"' + v.encode() + b'"' for k, v in raw_fields.items()) + b"}"


async def test_escaped_prefixed_secret_in_a_name_reaches_no_alert_state_keyed_or_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`sk_live_abc\\u0050...` in a lifecycle `name` is redacted in the alert summary and evidence, the state,
    the keyed message and the log."""
    caplog.set_level(logging.DEBUG)
    sink = MemorySink()
    secret = "sk_live_abcPq7Rr8Ss9Tt0Uu1Vv"
    value = _json_with(lifecycle_dict(), name="ci sk_live_abc\\u0050q7Rr8Ss9Tt0Uu1Vv")
    store = await _through(_processor(sink), [("life", b"sk_live_abc\\u0050q7Rr8Ss9Tt0Uu1Vv", value)])
    (alert,) = [orjson.loads(v) for _, v in sink.messages["alerts"]]
    token = Redactor(b"k" * 16).token_for(secret.encode()).decode()
    assert alert["data"]["evidence"]["name"] == f"ci {token}"
    assert token in alert["data"]["summary"]
    assert "abcPq7Rr8Ss9Tt0Uu1Vv" not in _everything(sink, store, caplog.text)
    assert "q7Rr8Ss9Tt0Uu1Vv" not in _everything(sink, store, caplog.text)


async def test_escaped_secret_in_a_bad_field_stays_out_of_the_reason_and_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`"status":"sk\\u005flive_..."` is dead-lettered with a reason (and INFO log line) showing only the hash."""
    caplog.set_level(logging.DEBUG)
    sink = MemorySink()
    value = _json_with(request_dict(status=None), status="sk\\u005flive_4eC39HqLyjWDarjtT1zdp7dc")
    store = await _through(_processor(sink), [("req", None, value)])
    (letter,) = [orjson.loads(v) for _, v in sink.messages["dlq"]]
    assert letter["reason_code"] == "schema"
    assert "'redacted:" in letter["reason"]
    assert "redacted:" in caplog.text
    assert "4eC39HqLyjWDarjtT1zdp7dc" not in _everything(sink, store, caplog.text)


async def test_escaped_slash_and_letter_in_a_user_agent_reach_no_keyed_message() -> None:
    """`\\/` and `\\u0050` in a user agent do not hide a bearer token or a long random string from redaction."""
    sink = MemorySink()
    agent = "curl\\/8 Bearer \\u0050AbCdEf0123456789xyz Q7xK2mP9vR4tY8wZ3nB6cF1hJ5lD0s\\u0047aE"
    store = await _through(_processor(sink), [("req", None, _json_with(request_dict(), user_agent=agent))])
    (entry,) = orjson.loads(sink.messages["keyed"][0][1][1:])
    assert entry[10].startswith("curl/8 Bearer redacted:")
    everything = _everything(sink, store, "")
    assert "PAbCdEf0123456789xyz" not in everything
    assert "Q7xK2mP9vR4tY8wZ3nB6cF1hJ5lD0sGaE" not in everything


@pytest.mark.parametrize(
    "raw",
    [
        rb'{"name":"sk\u005flive_4eC39HqLyjWDarjtT1zdp7dc", oops}',  # invalid JSON
        b'{"name":"sk%5flive_4eC39HqLyjWDarjtT1zdp7dc","bad":"\xff"}',  # invalid UTF-8
        rb'{"ip":"1.2.3.4","ip":"token=s3cr3tvalue99"}',  # a duplicate key: decoding keeps the other value
        rb'{"password":"hunter2hunter2","api_key":12345678}',  # secrets named by their keys
    ],
)
def test_a_dead_letter_payload_never_decodes_back_into_a_secret(raw: bytes) -> None:
    """What cannot be decoded is redacted byte-wise; JSON-unescaping or percent-decoding the result finds nothing."""
    out = Redactor(b"k" * 16).redact_payload(raw)
    readable = _readable(out)
    for secret in ("4eC39HqLyjWDarjtT1zdp7dc", "s3cr3tvalue99", "hunter2hunter2", "12345678"):
        assert secret not in readable
    assert "redacted:" in readable


def test_same_secret_under_any_escaping_gets_the_same_hash_and_keys_state() -> None:
    """A secret pasted into `key_id`, escaped or not, becomes one token: the records still share a key's state."""
    processor = _processor(MemorySink())
    forms = ["sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk\\u005flive_4eC39HqLyjWDarjtT1zdp7dc",
             "sk%5Flive_4eC39HqLyjWDarjtT1zdp7dc", "sk%255flive_4eC39HqLyjWDarjtT1zdp7dc"]  # fmt: skip
    subjects = set()
    for form in forms:
        verdict = processor.route("req", None, _json_with(request_dict(key_id=None), key_id=form))
        assert isinstance(verdict, Accepted)
        subjects.add(verdict.subject)
    token = Redactor(b"k" * 16).token_for(b"sk_live_4eC39HqLyjWDarjtT1zdp7dc")
    assert subjects == {b"acme/" + token}


@pytest.mark.parametrize(
    "text",
    ["/v1/search?q=caf%C3%A9+100%25", "C:\\Users\\me", "say \\u0048i", "100% sure", "%zz%", "\\ud800 lone",
     "/v1/tokens/42?page=2", "x" * 40],
)  # fmt: skip
def test_values_with_escapes_but_no_secret_are_left_alone(text: str) -> None:
    """Escapes alone change nothing: a string without a secret, decoded or not, comes back as it was."""
    assert Redactor(b"k" * 16).redact_text(text) == text


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(alphabet=st.sampled_from(list('%\\u0123456789abcdefABCDEF_/"{}:,. =xyzQk')), max_size=120).map(
            str.encode
        ),
        st.builds(lambda a, b: a + b"sk_live_" + b, st.binary(max_size=20), st.binary(max_size=40)),
    )
)
def test_redact_payload_never_raises_and_is_idempotent(raw: bytes) -> None:
    """Any bytes: `redact_payload` returns bytes, and redacting its result again changes nothing."""
    redactor = Redactor(b"k" * 16)
    once = redactor.redact_payload(raw)
    assert redactor.redact_payload(once) == once
