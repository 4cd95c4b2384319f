"""Revoked while in use (apiKey.revokedWhileInUse): requests in the whole minutes before the revocation's
minute, decided at a tick at the revocation, monotone under late records; the replacement's networks."""

from __future__ import annotations

import msgspec
from coretest import HOUR, MINUTE, T0
from test_rotation import CREATED, IN_USE, NEW, OLD, every, final_states, life, of, replayed, req, worker_like

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.events import RequestRecord
from keywatch.core import revocation_impact
from keywatch.core.codec import decode_state, encode_state
from keywatch.runtime import make_engine

REVOKED = T0 + 5 * HOUR + 30_000  # 30 s into its minute
CLOCK = req(T0 + 10 * HOUR, "key-clock")  # moves the watermark past the revocation


def key_lines(requests: list[bytes], revoke: int = REVOKED) -> list[bytes]:
    """OLD created a day before, the given requests, revoked at `revoke`, and the clock."""
    return [life("apiKey.created", T0 - 24 * HOUR), *requests, life("apiKey.revoked", revoke), CLOCK]


def test_a_key_revoked_in_full_use_alerts_at_the_revocation() -> None:
    """A request a minute until the revocation: 15 in the window, one medium alert at the revocation's time,
    with the counts, who used it and no replacement."""
    lines = key_lines(every(T0, REVOKED + 2_000, MINUTE, ip="192.0.2.10", agent="billing/1.0"))
    [alert] = of(replayed(lines), IN_USE)
    ev = alert.data.evidence
    assert (alert.subject, alert.severity) == (f"acme/{OLD}", "medium")
    assert alert.time == Alert.model_validate({**alert.model_dump(), "time": REVOKED}).time
    assert (ev["requests_in_window"], ev["window_minutes"], ev["min_requests"]) == (15, 15, 5)
    assert ev["requests_per_minute"] == [1] * 15
    assert (ev["networks"], ev["user_agents"], ev["top_paths"]) == (["192.0.2.0/24"], ["billing/1.0"], ["/v1/orders"])
    assert (ev["replacement_key_id"], ev["replacement_serves_networks"]) == (None, "unknown")
    assert ev["revoked_by"] == "alice@acme.example"


def test_a_trickle_an_idle_key_and_a_never_used_key_are_quiet() -> None:
    """4 requests in the window (one fewer than min_requests), a key idle for hours, a key revoked before any
    request: no alert; the never-used key keeps no state of this detector."""
    trickle = [req(REVOKED - m * MINUTE) for m in (2, 5, 9, 13)]
    idle = every(T0, T0 + 2 * HOUR, MINUTE)
    for requests in (trickle, idle, []):
        assert of(replayed(key_lines(requests)), IN_USE) == []
    states = final_states(key_lines([]))
    assert revocation_impact.NAME not in states[f"acme/{OLD}"].detectors


def test_requests_in_the_revocations_minute_and_after_it_do_not_count() -> None:
    """Busy right after the revocation (in-flight, and failing services retrying) and in its own minute: only
    the whole minutes before count."""
    lines = key_lines([req(REVOKED - 20000), req(REVOKED - 10000), *every(REVOKED, REVOKED + HOUR, 5000)])
    assert of(replayed(lines), IN_USE) == []


def test_out_of_order_records_and_reprocessing_give_the_same_id() -> None:
    """Records out of order within the lateness, forwards late, ticks at a lagging watermark: the same id as
    replay, and replaying again gives it again."""
    lines = key_lines(every(T0, REVOKED, 2 * MINUTE) + every(REVOKED, REVOKED + 30 * MINUTE, 20_000))
    want = [a.id for a in of(replayed(lines), IN_USE)]
    assert len(want) == 1
    assert [a.id for a in of(replayed(lines), IN_USE)] == want
    for seed in (1, 2, 3, 4):
        assert [a.id for a in of(worker_like(lines, seed=seed, lag_ms=seed * 7 * MINUTE), IN_USE)] == want


def test_a_late_record_brings_the_window_to_the_threshold_after_the_tick() -> None:
    """4 requests when the tick runs; a fifth, older than the revocation, arrives after it: the alert fires
    then, with the revocation's time and the id replay gives (replay saw all five first)."""
    early = [req(REVOKED - m * MINUTE) for m in (3, 6, 9, 12)]
    late = req(REVOKED - 2 * MINUTE)
    engine = make_engine(Settings())
    state = final_states(key_lines(early))[f"acme/{OLD}"]
    ticked = engine.on_tick(state, REVOKED + 10 * MINUTE)
    assert ticked.alerts == []
    outcome = engine.on_request(decode_state(encode_state(ticked.state)), RequestRecord.model_validate_json(late))
    [alert] = of(outcome.alerts, IN_USE)
    [expected] = of(replayed(key_lines([*early, late])), IN_USE)
    assert (alert.id, alert.time) == (expected.id, expected.time)
    again = engine.on_request(outcome.state, RequestRecord.model_validate_json(req(REVOKED - 4 * MINUTE)))
    assert of(again.alerts, IN_USE) == []  # one alert per revocation


def test_a_repeated_revocation_event_alerts_once() -> None:
    """The revocation event processed twice (a re-delivery) and a later second revocation: one alert."""
    lines = key_lines(every(T0, REVOKED, MINUTE))
    lines += [life("apiKey.revoked", REVOKED), life("apiKey.revoked", REVOKED + HOUR)]
    assert len(of(replayed(lines), IN_USE)) == 1


def test_the_replacement_serving_only_one_of_the_networks_is_named() -> None:
    """After a rotation the new key serves one of the old key's two networks; the old key is revoked while the
    other still uses it: the alert names the replacement and says it serves them only partly."""
    lines = [life("apiKey.created", T0 - 24 * HOUR), life("apiKey.created", CREATED, NEW, replaces=OLD)]
    lines += every(T0, REVOKED, MINUTE, ip="192.0.2.10")
    lines += every(T0, CREATED + 30 * MINUTE, MINUTE, ip="198.51.100.10")
    lines += every(CREATED + 30 * MINUTE, REVOKED + HOUR, MINUTE, NEW, ip="198.51.100.11")
    lines += [life("apiKey.revoked", REVOKED), CLOCK]
    [alert] = of(replayed(lines), IN_USE)
    ev = alert.data.evidence
    assert (ev["replacement_key_id"], ev["replacement_serves_networks"]) == (NEW, "no")
    assert ev["networks"] == ["192.0.2.0/24"]
    assert ev["replacement_networks"] == ["198.51.100.0/24"]
    assert NEW in alert.data.summary


def test_state_is_small_and_survives_the_codec() -> None:
    """A busy key's slot: a ring of window + slack minutes and a few samples, the same after a round trip."""
    state = final_states(key_lines(every(T0, REVOKED, 2_000)))[f"acme/{OLD}"]
    slot = state.detectors[revocation_impact.NAME]
    assert len(slot.counts) == 15 + revocation_impact.RING_SLACK
    assert decode_state(encode_state(state)).detectors[revocation_impact.NAME] == slot
    assert len(msgspec.msgpack.encode(slot)) < 160


def test_samples_of_minutes_the_ring_no_longer_holds_are_dropped() -> None:
    """A key that moved: an hour on one network, agent and path, then on others. Its state keeps only the samples
    of minutes the ring still counts, and a revocation names only the networks of the window."""
    early = [req(T0 + m * MINUTE, ip=f"203.0.113.{m}", agent=f"old/{m}") for m in range(3)]
    lines = key_lines([*early, *every(T0 + HOUR, REVOKED, MINUTE, ip="192.0.2.10", agent="billing/1.0")])
    slot = final_states(lines)[f"acme/{OLD}"].detectors[revocation_impact.NAME]
    assert (set(slot.nets), set(slot.agents)) == ({"192.0.2.0/24"}, {"billing/1.0"})
    [alert] = of(replayed(lines), IN_USE)
    assert (alert.data.evidence["networks"], alert.data.evidence["user_agents"]) == (["192.0.2.0/24"], ["billing/1.0"])
