"""Hostile input through the whole pipeline (ingest, then detect) with hypothesis: it never raises, every record
either goes on to the keyed topic or is dead-lettered with a reason, and memory stays bounded (the key cap).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keywatch.config import Settings
from keywatch.contract.deadletter import REASON_CODES, DeadLetter
from keywatch.metrics import Metrics
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.keycap import KeyCap
from keywatch.pipeline.processor import Processor
from keywatch.redact import Redactor
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink
from tests.factories import lifecycle_dict, request_dict

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
MAX_STATE_BYTES = 16 * 1024  # per key, see tests/unit/core/test_bounded_state.py
CAP, PARTITIONS = 24, 4
ODD_IPS = [
    "0x7f.1", "127.1", "0177.0.0.1", "010.001.002.003", "::ffff:1.2.3.4", "::FFFF:7f00:1", "1.2.3.4 ", " 1.2.3.4",
    "1.2.3.4/24", "1.2.3", "1.2.3.4.5", "256.0.0.1", "2001:DB8::1", "2001:db8:0:0:0:0:0:1", "::", "0.0.0.0",
    "255.255.255.255", "\uff11.\uff12.\uff13.\uff14", "1.2.3.4\x00", "[2001:db8::1]", "2001:db8::1:80", "", "-1.0.0.0",
]  # fmt: skip

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=40), st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=10),
)  # fmt: skip
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    """Event times anywhere: far past and future, epoch ms, odd strings, wrong types."""
    return draw(
        st.one_of(
            st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)).map(
                lambda d: d.isoformat()
            ),
            st.integers(min_value=-(2**63), max_value=2**63),
            st.sampled_from(["2026-01-05T12:00:00", "2026-13-45T99:99:99Z", "yesterday", "", "1e308", "NaN"]),
            st.floats(),
            st.integers(min_value=0, max_value=3 * 24 * 3600 * 1000).map(
                lambda ms: (NOW - timedelta(milliseconds=ms)).isoformat()
            ),
            json_value,
        )
    )


def ips() -> st.SearchStrategy[Any]:
    """Addresses in odd notations, real ones of both families, random text and wrong types."""
    return st.one_of(
        st.sampled_from(ODD_IPS),
        st.ip_addresses().map(str),
        st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
        st.text(max_size=45),
        json_value,
    )


def mfa_values() -> st.SearchStrategy[Any]:
    """The MFA flag as booleans, and as what a careless producer sends instead ("yes", 1, null, text)."""
    return st.one_of(st.booleans(), st.sampled_from(["yes", "true", "false", 1, 0, None, 1.0, [True]]), texts())


def texts() -> st.SearchStrategy[Any]:
    """Strings with control characters, huge strings, secret-looking strings, wrong types."""
    return st.one_of(
        st.text(max_size=30),
        st.text(alphabet=st.characters(max_codepoint=0x20), max_size=20),
        st.integers(min_value=1, max_value=120_000).map(lambda n: "x" * n),
        st.just("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"),
        json_value,
    )


@st.composite
def request_record(draw: st.DrawFn) -> bytes:
    """A request record, usually almost valid, with hostile values in some fields."""
    key = draw(st.integers(min_value=0, max_value=200))
    record: dict[str, Any] = request_dict(
        key_id=f"k{key}", ip=f"198.51.{key % 256}.{draw(st.integers(1, 254))}", ts=draw(st.sampled_from(VALID_TS))
    )
    if draw(st.booleans()):  # a browser's headers (usedFromBrowser), some of them hostile below
        record.update(origin="https://app.example", referer="https://app.example/p?q=1", sec_fetch_mode="cors")
        record["sec_fetch_site"] = draw(st.sampled_from(["cross-site", "same-site", "none"]))
    if draw(st.booleans()):  # a key-management path (keyManagementAttempt), in some encoding
        record["path"] = draw(st.sampled_from(["/v1/keys", "/V1//API-KEYS/x?a=1", "/v1/%6beys", "/v2/tokens/"]))
    hostile = [*record, *BROWSER_FIELDS, "extra", "deep"]
    for name in draw(st.sets(st.sampled_from(hostile), max_size=4)):
        record[name] = draw(
            {"ts": timestamps(), "ip": ips()}.get(name, texts() if name != "deep" else _deep_json(draw))
        )
    return _encode(draw, record)


@st.composite
def lifecycle_event(draw: st.DrawFn) -> bytes:
    """A lifecycle event, usually almost valid, with hostile values in some fields."""
    key = draw(st.integers(min_value=0, max_value=200))
    kind = draw(st.sampled_from(["apiKey.created", "apiKey.revoked", "apiKey.scopeChanged", "apiKey.bogus"]))
    record: dict[str, Any] = lifecycle_dict(type=kind, key_id=f"k{key}", ts=draw(st.sampled_from(VALID_TS)))
    if draw(st.booleans()):
        record["replaces_key_id"] = f"k{draw(st.integers(0, 200))}"
    if draw(st.booleans()):  # the optional channel and MFA flag (absent in older records)
        record["channel"] = draw(st.sampled_from(["portal", "api", "Portal", "terraform"]))
        record["mfa"] = draw(st.booleans())
    for name in draw(st.sets(st.sampled_from([*record, "channel", "mfa", "extra"]), max_size=3)):
        record[name] = draw({"ts": timestamps(), "ip": ips(), "mfa": mfa_values()}.get(name, texts()))
    return _encode(draw, record)


BROWSER_FIELDS = ["origin", "referer", "sec_fetch_site", "sec_fetch_mode"]
VALID_TS = [(NOW - timedelta(hours=h)).isoformat() for h in (72, 48, 30, 25, 24, 12, 1, 0)]


def _deep_json(draw: st.DrawFn) -> st.SearchStrategy[Any]:
    depth = draw(st.integers(min_value=1, max_value=2000))
    return st.just(orjson.loads(b"[" * min(depth, 250) + b"]" * min(depth, 250)))


def _encode(draw: st.DrawFn, record: dict[str, Any]) -> bytes:
    try:
        raw = orjson.dumps(record)
    except (TypeError, orjson.JSONEncodeError):  # e.g. integers beyond 64 bits: send them as text
        raw = repr(record).encode()
    mangle = draw(st.sampled_from(["none", "none", "none", "truncate", "utf8", "prefix", "nested_deep"]))
    if mangle == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif mangle == "utf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"])) + raw[at:]
    elif mangle == "prefix":
        raw = draw(st.sampled_from([b"\xef\xbb\xbf", b" ", b"[", b"null"])) + raw
    elif mangle == "nested_deep":
        raw = b"[" * 100_000 + b"]" * 100_000
    return raw


raw_records = st.one_of(
    st.tuples(st.just("requests"), request_record()),
    st.tuples(st.just("lifecycle"), lifecycle_event()),
    st.tuples(st.sampled_from(["requests", "lifecycle"]), st.binary(max_size=300)),
    st.tuples(st.sampled_from(["requests", "lifecycle"]), st.none()),
)


def _processor(sink: MemorySink, metrics: Metrics) -> Processor:
    return Processor(
        make_engine(Settings()),
        sink,
        Topics("requests", "lifecycle"),
        clock=lambda: NOW,
        metrics=metrics,
        redactor=Redactor(b"fuzz-redaction-key"),
        key_cap=KeyCap(CAP, PARTITIONS),
    )


async def _run(records: list[tuple[str, bytes | None]]) -> tuple[MemorySink, dict[bytes, bytes], Metrics]:
    sink, metrics, store = MemorySink(), Metrics(), {}
    processor = _processor(sink, metrics)
    for offset, (topic, value) in enumerate(records):
        keyed_before, dlq_before = len(sink.messages["keyed"]), len(sink.messages["dlq"])
        await processor.ingest(topic, 0, offset, f"k{offset}".encode(), value)
        out = (len(sink.messages["keyed"]) - keyed_before, len(sink.messages["dlq"]) - dlq_before)
        assert out in ((1, 0), (0, 1)), f"record {offset} produced {out}"
    done = 0
    while done < len(sink.messages["keyed"]):  # forwards (rotations) add keyed messages as we go
        key, value = sink.messages["keyed"][done]
        done += 1
        assert key is not None
        await processor.detect(key, value, store)
        assert len(store) <= CAP
    return sink, store, metrics


def _check_letters(sink: MemorySink) -> None:
    for _, value in sink.messages["dlq"]:
        letter = DeadLetter.model_validate_json(value)
        assert letter.reason_code in REASON_CODES
        assert letter.reason.strip()
        payload = base64.b64decode(letter.payload_b64)
        # a record past the letter's payload limit keeps a prefix; payload_size is the whole record's size
        assert len(payload) == letter.payload_size or (letter.payload_truncated and len(payload) < letter.payload_size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(raw_records, min_size=1, max_size=60))
def test_hostile_records_never_raise_and_are_accounted_for(records: list[tuple[str, bytes | None]]) -> None:
    """Any mix of hostile records: no exception; each is forwarded or dead-lettered with a reason; state bounded."""
    sink, store, _ = asyncio.run(_run(records))
    _check_letters(sink)
    assert all(len(v) <= MAX_STATE_BYTES for v in store.values())
    for _, value in sink.messages["alerts"]:
        orjson.loads(value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.just("requests"), request_record()), min_size=5, max_size=40), st.randoms())
def test_duplicated_and_reordered_records_give_the_same_alert_ids(
    records: list[tuple[str, bytes | None]], rnd: Any
) -> None:
    """Re-sending every record (at-least-once) emits only alert ids the single pass emits; order never raises."""
    once, _, _ = asyncio.run(_run(records))
    twice, _, _ = asyncio.run(_run(records + records))
    ids_once = {orjson.loads(v)["id"] for _, v in once.messages["alerts"]}
    ids_twice = {orjson.loads(v)["id"] for _, v in twice.messages["alerts"]}
    assert ids_once <= ids_twice
    shuffled = list(records)
    rnd.shuffle(shuffled)
    asyncio.run(_run(shuffled + shuffled[: len(shuffled) // 2]))


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=CAP + 1, max_value=400), st.booleans())
def test_a_flood_of_distinct_keys_and_ips_stays_under_the_key_cap(keys: int, with_ip_flood: bool) -> None:
    """Distinct keys beyond the cap evict the least recently seen ones; the eviction counter says how many."""
    records: list[tuple[str, bytes | None]] = []
    for i in range(keys):
        ip = str(ipaddress.IPv4Address(0x0A000000 + i * 977)) if with_ip_flood else "192.0.2.10"
        ts = (NOW - timedelta(seconds=keys - i)).isoformat()
        records.append(("requests", orjson.dumps(request_dict(key_id=f"flood{i}", ip=ip, ts=ts))))
    sink, store, metrics = asyncio.run(_run(records))
    # one keyed message per record; the rest are hand-offs to the tenant's state (first uses of a key)
    assert len([v for _, v in sink.messages["keyed"] if not v.startswith(b"F")]) == keys
    assert len(store) <= CAP
    evicted = metrics.registry.get_sample_value("keywatch_keys_evicted_total")
    assert evicted == keys + 1 - len(store)  # the keys and their tenant's state (the first uses it is told of)
    # the newest key of each partition survived (least recently seen go first)
    cap = KeyCap(CAP, PARTITIONS)
    newest: dict[int, bytes] = {}
    for i in range(keys):
        key = f"acme/flood{i}".encode()
        newest[cap.partition_of(key)] = key
    assert set(newest.values()) <= store.keys()


def test_key_cap_index_rebuilds_from_the_table() -> None:
    """After a rebalance the index is rebuilt from the table: eviction order is a function of the state alone."""
    cap = KeyCap(4, 1)
    table = {f"t/k{i}".encode(): orjson.dumps({"r": {"last_seen_ms": 1000 + i}}) for i in range(4)}
    cap.rebuild(table.items())
    assert not cap.stale
    assert cap.touch(b"t/new", 5000) == [b"t/k0"]
    assert cap.touch(b"t/k1", 6000) == []  # touching a known key evicts nothing
    assert cap.touch(b"t/new2", 7000) == [b"t/k2"]


def test_ipv6_with_a_zone_id_is_dead_lettered_at_ingest() -> None:
    """`fe80::1%eth0` is rejected at ingest (reason `ip`) instead of failing in detect (found by this fuzzing)."""
    sink, _, _ = asyncio.run(_run([("requests", orjson.dumps(request_dict(ip="fe80::1%eth0")))]))
    assert [DeadLetter.model_validate_json(v).reason_code for _, v in sink.messages["dlq"]] == ["ip"]


def test_ipv4_mapped_addresses_are_compared_as_their_ipv4_range() -> None:
    """`::ffff:1.2.3.4` and `::ffff:5.6.7.8` are two different /24 ranges, not one IPv6 /64 (found by fuzzing)."""
    from keywatch.core.ip_baseline import range_of
    from keywatch.parsing import decode_request

    a = decode_request(orjson.dumps(request_dict(ip="::ffff:1.2.3.4")))
    b = decode_request(orjson.dumps(request_dict(ip="::ffff:5.6.7.8")))
    assert range_of(a.ip) != range_of(b.ip)  # type: ignore[union-attr]
