"""Dead letters always fit in one Kafka message: bounded payload, key and reason, and a prefix that never ends
inside a token; checked at the byte level through the real ingest path (`Processor.pack_batch`)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import orjson
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keywatch.config import Settings
from keywatch.contract.deadletter import (
    KEY_MAX_BYTES,
    LETTER_MAX_BYTES,
    PAYLOAD_MAX_BYTES,
    PRODUCER_MAX_REQUEST_BYTES,
    DeadLetter,
    cut_prefix,
    make_letter,
)
from keywatch.metrics import Metrics
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.processor import Processor
from keywatch.redact import Redactor
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink

TOKEN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=:")
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def reference_cut(data: bytes, limit: int) -> bytes:
    """The longest prefix of at most `limit` bytes that does not end between two token bytes (step by step)."""
    if len(data) <= limit:
        return data
    n = limit
    while n > 0 and data[n - 1] in TOKEN and data[n] in TOKEN:
        n -= 1
    return data[:n]


def around(limit: int) -> st.SearchStrategy[bytes]:
    """Bytes of a size near `limit` (just under, at, just over, far over), with arbitrary bytes where it is cut:
    a repeated filler (token bytes, blanks, quotes, secrets) and a hypothesis-chosen stretch across the bound."""
    filler = st.sampled_from([b"a", b"word ", b'{"k":"v"} ', b"\xff\x00", b"sk_live_", b"Bearer ", b"redacted:"])
    return st.builds(
        lambda unit, seam, delta, shift: ((unit * (limit // len(unit) + 2))[: max(0, limit + delta)] + seam)[
            : max(0, limit + delta + len(seam) - shift)
        ],
        filler,
        st.binary(max_size=48) | st.text(alphabet="aZ9-_.:/= \"'\n", max_size=48).map(str.encode),
        st.sampled_from([-40, -3, -1, 0, 1, 2, 5, 40, 5000]),
        st.integers(min_value=0, max_value=48),
    )


def _processor() -> Processor:
    return Processor(
        make_engine(Settings()),
        MemorySink(),
        Topics("requests", "lifecycle"),
        max_record_bytes=16 * 1024 * 1024,  # a large record is rejected for its content, not its size
        redactor=Redactor(b"k" * 16),
        metrics=Metrics(),
        clock=lambda: NOW,
    )


def _check_part(whole: bytes, prefix: bytes, limit: int) -> None:
    assert prefix == reference_cut(whole, limit)
    assert len(prefix) <= limit
    assert whole.startswith(prefix)
    if len(prefix) < len(whole):  # cut: never between two token bytes
        assert not (prefix and prefix[-1] in TOKEN and whole[len(prefix)] in TOKEN)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=around(PAYLOAD_MAX_BYTES), key=st.none() | around(KEY_MAX_BYTES))
def test_a_dead_letter_is_bounded_and_its_prefix_never_splits_a_token(value: bytes, key: bytes | None) -> None:
    """Through pack_batch: the letter fits its bound, keeps a token-safe prefix of the value and key it was handed,
    says whether it cut them, and carries their full size and the value's SHA-256."""
    processor = _processor()
    verdict = processor.route("requests", key, value)
    handed_value, handed_key = getattr(verdict, "value", None) or b"", getattr(verdict, "key", None)
    out = processor.pack_batch([("requests", 1, 7, key, value)], lambda subject: 0)
    if not out.dead_letters:  # the filler made a valid record: nothing to check
        return
    (sent,) = out.dead_letters
    assert len(sent.value) <= LETTER_MAX_BYTES
    letter = DeadLetter.model_validate_json(sent.value)
    payload = base64.b64decode(letter.payload_b64)
    _check_part(handed_value, payload, PAYLOAD_MAX_BYTES)
    assert letter.payload_truncated == (len(handed_value) > PAYLOAD_MAX_BYTES)
    assert letter.payload_size == len(handed_value)
    assert letter.payload_sha256 == hashlib.sha256(handed_value).hexdigest()
    if handed_key is None:
        assert (letter.key_b64, letter.key_size, letter.key_truncated, sent.key) == (None, None, False, None)
    else:
        assert letter.key_b64 is not None
        short = base64.b64decode(letter.key_b64)
        _check_part(handed_key, short, KEY_MAX_BYTES)
        assert sent.key == short  # the letter's Kafka key is cut the same way
        assert letter.key_size == len(handed_key)
        assert letter.key_truncated == (len(handed_key) > KEY_MAX_BYTES)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=80), limit=st.integers(min_value=0, max_value=90))
def test_cut_prefix_is_the_longest_token_safe_prefix(data: bytes, limit: int) -> None:
    """cut_prefix keeps the longest prefix within the limit that does not end between two token bytes."""
    assert cut_prefix(data, limit) == reference_cut(data, limit)


def test_a_secret_across_the_bound_leaves_no_part_of_it_nor_of_its_redaction() -> None:
    """A secret straddling the cut is redacted, and the prefix stops before the whole `redacted:<hex>`."""
    secret = b"sk_live_" + b"Q7x" * 12
    filler = b'{"note":"' + b"x " * ((PAYLOAD_MAX_BYTES - 20) // 2)
    value = filler + secret + b'", "more":"' + b"y" * 1000 + b'"}'
    processor = _processor()
    (sent,) = processor.pack_batch([("requests", 0, 0, None, value)], lambda subject: 0).dead_letters
    letter = orjson.loads(sent.value)
    payload = base64.b64decode(letter["payload_b64"])
    assert letter["payload_truncated"] is True
    assert secret[:6] not in payload
    assert payload.endswith(b"x ")  # backed off to the blank before the redaction
    assert b"redacted" not in payload


def test_the_largest_letter_fits_the_producers_max_request_size() -> None:
    """The worst letter (payload, key and reason at their bounds, the reason all control characters, the longest
    topic name) stays within LETTER_MAX_BYTES, and a record of it with its key fits the producer's limit."""
    letter = make_letter(
        source_topic="t" * 249,
        partition=2**31 - 1,
        offset=2**63 - 1,
        reason_code="internal",
        reason="\x00" * 100_000,
        rejected_at=NOW,
        key=b"\x01" * (10 * KEY_MAX_BYTES),
        value=b"\x02" * (10 * PAYLOAD_MAX_BYTES),
    )
    raw = letter.model_dump_json().encode()
    assert letter.payload_truncated
    assert letter.key_truncated
    assert len(raw) <= LETTER_MAX_BYTES
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(b"\x01" * KEY_MAX_BYTES, b"v" * LETTER_MAX_BYTES, [])
    assert size <= PRODUCER_MAX_REQUEST_BYTES


def test_a_letter_under_the_bounds_keeps_everything_whole() -> None:
    """A small record's letter is the record byte for byte, not marked as cut."""
    letter = make_letter(
        source_topic="requests",
        partition=0,
        offset=1,
        reason_code="json",
        reason="record is not valid JSON",
        rejected_at=NOW,
        key=b"k" * KEY_MAX_BYTES,
        value=b"v" * PAYLOAD_MAX_BYTES,
    )
    assert base64.b64decode(letter.payload_b64) == b"v" * PAYLOAD_MAX_BYTES
    assert base64.b64decode(letter.key_b64 or "") == b"k" * KEY_MAX_BYTES
    assert (letter.payload_truncated, letter.key_truncated, letter.key_size) == (False, False, KEY_MAX_BYTES)


def test_the_size_and_hash_of_a_letter_are_of_the_redacted_value_never_of_the_secret() -> None:
    """A rejected record with a secret: `payload_size` and `payload_sha256` describe the value as kept (redacted),
    so the letter holds no hash a guessed secret could be checked against."""
    value = b'{"ip":"300.1.1.1","path":"/v1/x?access_token=Zq8Wm3Xr5Tn7Yv2Kp"}'
    processor = _processor()
    (sent,) = processor.pack_batch([("requests", 0, 0, None, value)], lambda subject: 0).dead_letters
    letter = DeadLetter.model_validate_json(sent.value)
    payload = base64.b64decode(letter.payload_b64)
    assert b"Zq8Wm3Xr5Tn7Yv2Kp" not in payload
    assert b"redacted:" in payload
    assert (letter.payload_size, letter.payload_sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert hashlib.sha256(value).hexdigest() not in sent.value.decode()
