"""Decoding raw input into contract models, and the rejections bad input gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.parsing import Rejection, decode
from tests.corpus import Bad, malformed
from tests.factories import as_bytes, lifecycle_dict, request_dict

NOW = datetime(2026, 1, 5, 12, 5, tzinfo=UTC)
CORPUS = malformed(NOW)


def _decode(bad: Bad) -> RequestRecord | LifecycleEvent | Rejection:
    model = RequestRecord if bad.kind == "requests" else LifecycleEvent
    return decode(bad.value, model, now=NOW, max_future_skew=timedelta(minutes=5))


def test_corpus_has_twenty_kinds() -> None:
    """The malformed corpus covers at least 20 distinct mistakes and every reason code but `internal`."""
    assert len({b.name for b in CORPUS}) >= 20
    assert {b.code for b in CORPUS} >= {"oversize", "encoding", "json", "not_object", "schema", "ip", "timestamp"}


@pytest.mark.parametrize("bad", CORPUS, ids=lambda b: b.name)
def test_malformed_record_is_rejected_with_reason(bad: Bad) -> None:
    """Every malformed record is rejected, never raised, with the expected code and an actionable reason."""
    result = _decode(bad)
    assert isinstance(result, Rejection)
    assert result.code == bad.code, result.reason
    assert bad.fragment in result.reason


def test_valid_request_decodes_and_normalises() -> None:
    """A valid request decodes; epoch-ms and offset times become UTC, IPv6 is normalised."""
    raw = as_bytes(request_dict(ts=1767614400000, ip="2001:DB8:0:0::1", extra_field="ignored"))
    record = decode(raw, RequestRecord)
    assert isinstance(record, RequestRecord)
    assert record.ts == datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert record.ip == "2001:db8::1"
    assert record.subject == "acme/key_live_1"
    assert not hasattr(record, "extra_field")


def test_offset_time_is_converted_to_utc() -> None:
    """An RFC 3339 time with an offset is converted to UTC."""
    record = decode(as_bytes(request_dict(ts="2026-01-05T13:00:00+01:00")), RequestRecord)
    assert isinstance(record, RequestRecord)
    assert record.ts == datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_future_within_skew_is_accepted() -> None:
    """A record a little ahead of the clock (producer clock skew) is accepted."""
    ahead = (NOW + timedelta(minutes=4)).isoformat()
    record = decode(as_bytes(request_dict(ts=ahead)), RequestRecord, now=NOW, max_future_skew=timedelta(minutes=5))
    assert isinstance(record, RequestRecord)


def test_lifecycle_rotation_decodes() -> None:
    """A rotation's new key carries replaces_key_id."""
    raw = as_bytes(lifecycle_dict(key_id="key_live_2", replaces_key_id="key_live_1"))
    event = decode(raw, LifecycleEvent)
    assert isinstance(event, LifecycleEvent)
    assert event.replaces_key_id == "key_live_1"


def test_several_problems_are_counted() -> None:
    """When many fields are wrong, the reason names the first and counts the rest."""
    result = decode(b'{"ts": 1}', RequestRecord)
    assert isinstance(result, Rejection)
    assert "more problem(s)" in result.reason


def test_bad_value_is_truncated_in_reason() -> None:
    """A huge bad value is not copied whole into the reason."""
    result = decode(as_bytes(request_dict(ip="9" * 60)), RequestRecord)
    assert isinstance(result, Rejection)
    assert len(result.reason) < 200


def test_ipv4_mapped_ipv6_becomes_ipv4() -> None:
    """A dual-stack gateway's `::ffff:a.b.c.d` is the IPv4 client a.b.c.d."""
    record = decode(as_bytes(request_dict(ip="::ffff:198.51.100.7")), RequestRecord)
    assert isinstance(record, RequestRecord)
    assert record.ip == "198.51.100.7"


def test_ipv6_zone_is_rejected() -> None:
    """A zoned link-local address names an interface, not a client: dead-lettered with reason `ip`."""
    result = decode(as_bytes(request_dict(ip="fe80::1%eth0")), RequestRecord)
    assert isinstance(result, Rejection)
    assert result.code == "ip"
    assert "IPv6 zone" in result.reason
