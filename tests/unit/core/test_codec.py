"""Key state on the wire (core/codec.py): the round trip, typed slots, and states written by the first format."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
from coretest import MINUTE, T0, Cluster
from hypothesis import given, strategies
from test_engine import mixed_stream

from keywatch.contract.events import LifecycleEvent, RequestRecord, format_time
from keywatch.core import codec
from keywatch.core.config import detection_config_from_mapping
from keywatch.core.environment import EnvironmentState
from keywatch.core.error_burst import ErrorBurstState
from keywatch.core.ip_baseline import IpState
from keywatch.core.privilege import PrivilegeState
from keywatch.core.rate_baseline import RateState
from keywatch.core.revocation_impact import RevocationState
from keywatch.core.revoked_use import RevokedUseState
from keywatch.core.state import KeyRegistryEntry, KeyState
from keywatch.core.wiring import build_engine

FORMAT_1 = Path(__file__).resolve().parent / "data" / "states-v1.json"
FIELDS = KeyRegistryEntry.__struct_fields__


def _value(name: str) -> strategies.SearchStrategy[Any]:
    if name == "status":
        return strategies.sampled_from(["unknown", "active", "revoked"])
    if name in ("requests", "hygiene"):
        return strategies.integers(min_value=0, max_value=2**53)
    if name.endswith("_ms"):
        return strategies.one_of(strategies.none(), strategies.integers(min_value=0, max_value=2**53))
    return strategies.one_of(strategies.none(), strategies.text(max_size=12))


entries = strategies.fixed_dictionaries({name: _value(name) for name in FIELDS}).map(
    lambda values: KeyRegistryEntry(**values)
)


@given(entries)
def test_any_registry_entry_survives_the_round_trip(entry: KeyRegistryEntry) -> None:
    """Every registry field, set or not, reads back as it was written."""
    state = KeyState("acme", "key-1", entry)
    assert codec.decode_state(codec.encode_state(state)).registry == entry


def test_state_round_trip_is_byte_identical_with_typed_slots(
    engine_factory: Callable[..., Any],
    request_factory: Callable[..., RequestRecord],
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """A state with every detector's part, suppressions and an open episode encodes, decodes to the detectors'
    own types and encodes to the same bytes again."""
    engine = engine_factory(ip={"learning_seconds": 0, "learning_requests": 0})
    state = engine.on_lifecycle(None, lifecycle_factory(ts=T0 - MINUTE)).state
    for i in range(200):
        record = request_factory(ts=T0 + i * 1_000, status=401 if i % 3 else 200, ip=f"198.51.100.{i % 5}")
        state = engine.on_request(state, record).state
    state = engine.on_lifecycle(state, lifecycle_factory(type="apiKey.revoked", ts=T0 + 30 * MINUTE)).state
    state = engine.on_request(state, request_factory(ts=T0 + 40 * MINUTE, ip="203.0.113.9")).state
    raw = codec.encode_state(state)
    loaded = codec.decode_state(raw)
    assert codec.encode_state(loaded) == raw
    kinds = {name: type(slot) for name, slot in loaded.detectors.items()}
    assert kinds == {
        "ip": IpState,
        "rate": RateState,
        "errors": ErrorBurstState,
        "revoked": RevokedUseState,
        "environment": EnvironmentState,
        "privilege": PrivilegeState,
        "revocation_impact": RevocationState,
    }
    assert loaded.suppressed == state.suppressed
    assert "usedafterrevoke" in loaded.suppressed
    assert any(slot.startswith("usedfromnewip|") for slot in loaded.suppressed)


def _rate_state(hour_level: list[int | float]) -> RateState:
    return RateState(
        minute=29_937_197,
        first_minute=29_935_808,
        counts=[0, 0, 3, 0, 0, 1],
        level=0.007,
        spread=0.04,
        minutes=1384,
        hour_level=hour_level,
        hour_spread=[round(0.001 * i * i, 3) for i in range(24)],
        hour_updates=[60] * 24,
        expected=3,
        expected_spread=1.0,
        threshold=None,
    )


@given(
    strategies.lists(
        strategies.one_of(
            strategies.integers(min_value=0, max_value=10**6),
            strategies.integers(min_value=0, max_value=10**9).map(lambda m: round(m / 1000, 3)),
        ),
        min_size=24,
        max_size=24,
    )
)
def test_the_rate_slot_is_json_and_keeps_every_value_and_its_type(hour_level: list[int | float]) -> None:
    """The rate baseline's slot is written as JSON: every level comes back equal and of its own type (an int stays
    an int, 0.0 stays a float), and the state encodes to the same bytes again."""
    rate = _rate_state(hour_level)
    raw = codec.encode_state(KeyState("acme", "key-1", detectors={"rate": rate}))
    loaded = codec.decode_state(raw).detectors["rate"]
    assert loaded == rate
    assert [type(v) for v in loaded.hour_level] == [type(v) for v in hour_level]
    assert codec.encode_state(KeyState("acme", "key-1", detectors={"rate": loaded})) == raw
    assert msgspec.msgpack.decode(raw)[4]["rate"] == msgspec.json.encode(rate)  # a bin holding the JSON


def test_a_rate_slot_written_as_messagepack_is_still_read() -> None:
    """States written before the rate slot went JSON (format 2, every slot MessagePack) load unchanged, and are
    written back in the new form, over 100 bytes smaller for a quiet key's levels."""
    rate = _rate_state([0.0] * 12 + [0.017, 2] + [0.5] * 10)
    old = msgspec.msgpack.encode((2, "acme", "key-1", KeyRegistryEntry(), {"rate": rate}, {}, {}, {}))
    loaded = codec.decode_state(old)
    assert loaded.detectors["rate"] == rate
    assert type(loaded.detectors["rate"].hour_level[13]) is int
    rewritten = codec.encode_state(loaded)
    assert len(rewritten) < len(old) - 100
    assert codec.decode_state(rewritten).detectors["rate"] == rate


def test_slot_of_an_unregistered_detector_is_kept_as_it_was() -> None:
    """A state holding the part of a detector this version does not run loads, and writes that part back."""
    raw = codec.encode_state(KeyState("acme", "key-1", detectors={"retired": [1, "two", 3.0]}))
    loaded = codec.decode_state(raw)
    assert isinstance(loaded.detectors["retired"], msgspec.Raw)
    assert codec.encode_state(loaded) == raw


def test_peek_reads_registry_and_ticks_of_both_formats() -> None:
    """The index rebuild reads a state's registry and ticks, in format 2 and in format 1."""
    state = KeyState("acme", "key-1", KeyRegistryEntry(last_seen_ms=5), ticks={"toy": 9})
    assert codec.peek(codec.encode_state(state)) == (KeyRegistryEntry(last_seen_ms=5), {"toy": 9})
    assert codec.peek(b'{"t":"acme","k":"key-1","r":{"last_seen_ms":7,"colour":1}}') == (
        KeyRegistryEntry(last_seen_ms=7),
        {},
    )


def _events() -> list[Any]:
    def request(**fields: Any) -> RequestRecord:
        base = {"ts": T0, "tenant": "acme", "key_id": "key-1", "env": "live", "ip": "192.0.2.10"}
        return RequestRecord.model_validate({**base, "method": "GET", "path": "/v1/orders", "status": 200, **fields})

    def lifecycle(**fields: Any) -> LifecycleEvent:
        base = {"type": "apiKey.created", "ts": T0, "tenant": "acme", "key_id": "key-1", "name": "billing-sync"}
        return LifecycleEvent.model_validate(
            {**base, "env": "live", "role": "read", "actor": "alice@example.com", **fields}
        )

    events = mixed_stream(request, lifecycle)
    events += [
        request(key_id="key-2", ts=T0 + 9 * 3_600_000 + 2 * MINUTE, ip="198.51.100.1", status=401),
        request(key_id="key-2", ts=T0 + 10 * 3_600_000 + 30 * MINUTE, ip="198.51.100.1", status=200),
    ]
    return events


def _not_new_ip(alerts: list[str]) -> list[str]:
    # usedFromNewIp changed its rule after these states were captured (learning from the first request seen,
    # one alert per network): its alerts are no longer the ones that version gave, by design.
    return [a for a in alerts if '"type":"apiKey.usedFromNewIp"' not in a]


NEW_EVIDENCE = {
    "apiKey.4xxCluster": (
        "rule", "recent_errors", "recent_total", "recent_seconds", "learned_ratio", "expected_errors", "p_value",
        "surprise",
    ),
    "apiKey.requestSpike": ("rule", "sustained_threshold_per_minute", "sustained_minutes"),
    "apiKey.created": ("channel", "mfa"),
    "apiKey.scopeChanged": ("channel", "mfa"),
    "apiKey.revoked": ("channel", "mfa"),
}  # fmt: skip


TIME = r"\d{4}-\d{2}-\d{2}T[\d:.]+Z"


def _same_times(value: Any, key: str = "") -> Any:
    """Evidence times in one form: that version wrote some without milliseconds and `last_seen` as epoch
    milliseconds; every time is now RFC 3339 UTC with milliseconds (`format_time`)."""
    if isinstance(value, dict):
        return {k: _same_times(v, k) for k, v in value.items()}
    if isinstance(value, str) and re.fullmatch(TIME, value):
        return format_time(datetime.fromisoformat(value))
    if key == "last_seen" and isinstance(value, int):
        return format_time(value)
    return value


def _without_new_evidence(alert_json: str) -> str:
    """The alert as that version serialised it: without the evidence fields added since, order kept, times in
    today's one form."""
    alert = orjson.loads(alert_json)
    added = NEW_EVIDENCE.get(alert["type"], ())
    alert["data"]["evidence"] = _same_times({k: v for k, v in alert["data"]["evidence"].items() if k not in added})
    alert["data"]["summary"] = re.sub(
        r"\d{4}-\d{2}-\d{2}T[\d:.]+Z",
        lambda m: format_time(datetime.fromisoformat(m.group(0))),
        alert["data"]["summary"],
    )
    return orjson.dumps(alert).decode()


def test_states_written_by_the_first_format_continue_exactly() -> None:
    """States captured from keywatch before typed state (baselines, an open 4xx episode, an open spike, new-IP
    and revoked-use suppressions) load, and the same events after them give the alerts that version gave,
    byte for byte (but for usedFromNewIp, whose rule changed since)."""
    captured = orjson.loads(FORMAT_1.read_bytes())
    events = _events()
    # That version had only the share rule of the 4xx cluster and the per-minute spike rule (with the hour
    # profile from 3 days): run with those alone, and compare its alerts without the evidence fields added since.
    config = {
        **captured["config"],
        "errors": {"surprise": False},
        "rate": {**captured["config"]["rate"], "sustained_ratio": 0, "profile_min_days": 3.0},
    }
    for cut in captured["cuts"]:
        cluster = Cluster(build_engine(detection_config_from_mapping(config), "/keywatch/test"))
        cluster.states = {subject: codec.decode_state(raw.encode()) for subject, raw in cut["states"].items()}
        alerts = [_without_new_evidence(alert.model_dump_json()) for alert in cluster.feed(events[cut["cut"] :])]
        before = [_without_new_evidence(a) for a in cut["alerts_after"]]
        assert _not_new_ip(alerts) == _not_new_ip(before), cut["cut"]
    episodes = [codec.decode_state(raw.encode()).episodes for cut in captured["cuts"] for raw in cut["states"].values()]
    assert {"4xxcluster|403": ["403", "28492200"]} in episodes
    assert {"requestspike": ["28492260"]} in episodes


def test_format_1_registry_ignores_unknown_fields() -> None:
    """A registry entry with fields this version does not know loads without them."""
    assert KeyRegistryEntry.from_dict({"status": "active", "requests": 3, "colour": "blue"}) == KeyRegistryEntry(
        status="active", requests=3
    )


def test_random_traffic_round_trips_between_every_event() -> None:
    """Encoding and decoding between every event changes no alert (the worker does it, replay does not)."""
    rng = random.Random(3)
    events = _events()
    rng.shuffle(events[10:40])
    config = detection_config_from_mapping({"rate": {"min_history_minutes": 60}})
    direct: dict[str, KeyState] = {}
    engine = build_engine(config, "/keywatch/test")
    alerts = []
    for event in events:
        outcome = (
            engine.on_request(direct.get(event.subject), event)
            if isinstance(event, RequestRecord)
            else engine.on_lifecycle(direct.get(event.subject), event)
        )
        direct[event.subject] = outcome.state
        alerts += outcome.alerts
        for forward in outcome.forwards:
            direct[forward.subject] = engine.on_forward(direct.get(forward.subject), forward).state
    cluster = Cluster(build_engine(config, "/keywatch/test"))
    assert [a.model_dump_json() for a in cluster.feed(events)] == [a.model_dump_json() for a in alerts]
