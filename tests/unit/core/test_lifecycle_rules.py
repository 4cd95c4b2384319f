"""The lifecycle-event rules: role ranks (`[detection.roles]`), apiKey.privilegeEscalated (scope changes and
rotations, in any order), apiKey.managedOutsidePortal and apiKey.lifecycleBurst (a tenant alert, the same ids
whatever order the keys' hand-offs reach the tenant in)."""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from coretest import HOUR, MINUTE, T0, Cluster

from keywatch.config import ConfigError, Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent
from keywatch.core.config import detection_config_from_mapping
from keywatch.core.roles import RoleRanks, default_rank
from keywatch.core.wiring import build_engine
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.processor import Processor
from keywatch.pipeline.wire import compact, expand
from keywatch.replay import replay
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink

ESCALATED = "apiKey.privilegeEscalated"
OUTSIDE = "apiKey.managedOutsidePortal"
BURST = "apiKey.lifecycleBurst"


def of(alerts: list[Alert], alert_type: str) -> list[Alert]:
    """The alerts of one type."""
    return [a for a in alerts if a.type == alert_type]


def ids(alerts: list[Alert], alert_type: str) -> list[str]:
    """The sorted ids of one type's alerts."""
    return sorted(a.id for a in of(alerts, alert_type))


# -- ranks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "rank"),
    [
        ("read_only", 1),
        ("reporting", 1),
        ("ReadOnly", 1),
        ("viewer", 1),
        ("standard", 2),
        ("payments_write", 2),
        ("read_write", 2),
        ("key-manager", 2),
        ("full_access", 2),
        ("admin", 3),
        ("Tenant-Administrator", 3),
        ("org_owner", 3),
        ("ROOT", 3),
        ("anything", 2),
    ],
)
def test_default_rank_from_the_role_name(role: str, rank: int) -> None:
    """admin/owner/root 3, write/manage/full 2, read/readonly/view/reporting 1, else 2; case-insensitive, by
    substring, the highest tier wins."""
    assert default_rank(role) == rank


def test_the_roles_table_overrides_the_name_case_insensitively() -> None:
    """An entry of [detection.roles] wins over the name; lookups ignore case."""
    ranks = RoleRanks([("Billing_Admin", 2), ("Standard", 0)])
    assert ranks.rank("billing_admin") == 2
    assert ranks.rank("STANDARD") == 0
    assert ranks.rank("admin") == 3


def test_roles_are_read_from_the_detection_section() -> None:
    """[detection.roles] is a role -> rank table handed to the detectors."""
    config = detection_config_from_mapping({"roles": {"billing_admin": 2, "support_viewer": 1}})
    assert config.role_table() == (("billing_admin", 2), ("support_viewer", 1))
    assert config.for_env("sandbox").roles == config.roles
    assert detection_config_from_mapping(None).roles == {}


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ({"billing_admin": "high"}, "detection.roles.billing_admin: Input should be a valid integer"),
        ({"billing_admin": True}, "detection.roles.billing_admin: Input should be a valid integer"),
        ({"billing_admin": 1.5}, "detection.roles.billing_admin: Input should be a valid integer"),
        ({"billing_admin": -1}, "detection.roles.billing_admin: Input should be greater than or equal to 0"),
        ({"billing_admin": 101}, "detection.roles.billing_admin: Input should be less than or equal to 100"),
        ({"Admin": 1, "admin": 2}, "detection.roles: roles 'Admin' and 'admin' differ only in case"),
        ({"x" * 65: 1}, "detection.roles.xxxxx"),
        ("admin", "detection.roles: Input should be a valid dictionary"),
    ],
)
def test_bad_roles_are_rejected_by_the_settings_name(roles: Any, message: str) -> None:
    """A bad entry names the setting (and shows the value)."""
    with pytest.raises(
        ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")[:60].replace(".", r"\.")
    ):
        detection_config_from_mapping({"roles": roles})


# -- privilegeEscalated: scope changes ----------------------------------------------------------------------


def _life(lifecycle_factory: Callable[..., LifecycleEvent], **kw: Any) -> LifecycleEvent:
    return lifecycle_factory(**kw)


def test_a_scope_change_to_a_higher_rank_fires_high_with_evidence(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """read_only (1) -> admin (3): an escalation, at the change's time, with both roles and ranks."""
    cluster = cluster_factory()
    alerts = cluster.feed(
        [
            lifecycle_factory(ts=T0, role="read_only"),
            lifecycle_factory(
                type="apiKey.scopeChanged",
                ts=T0 + HOUR,
                role="admin",
                actor="mallory@example.com",
                ip="203.0.113.5",
                channel="portal",
                mfa=True,
            ),
        ]
    )
    [alert] = of(alerts, ESCALATED)
    assert alert.data.severity == "high"
    assert alert.data.key_id == "key-1"
    assert alert.time.timestamp() * 1000 == T0 + HOUR
    evidence = alert.data.evidence
    assert evidence["how"] == "scopeChanged"
    assert (evidence["previous_role"], evidence["previous_rank"]) == ("read_only", 1)
    assert (evidence["new_role"], evidence["new_rank"]) == ("admin", 3)
    assert (evidence["actor"], evidence["actor_ip"], evidence["channel"], evidence["mfa"]) == (
        "mallory@example.com", "203.0.113.5", "portal", True,
    )  # fmt: skip
    assert evidence["replaces_key_id"] is None
    assert "read_only" in alert.data.summary
    assert "admin" in alert.data.summary


@pytest.mark.parametrize(
    ("before", "after"), [("admin", "read_only"), ("standard", "payments_write"), ("admin", "root")]
)
def test_narrowing_or_same_rank_scope_changes_are_quiet(
    cluster_factory: Callable[..., Cluster],
    lifecycle_factory: Callable[..., LifecycleEvent],
    before: str,
    after: str,
) -> None:
    """A narrowing change, or one to a role of the same rank, is no escalation."""
    cluster = cluster_factory()
    alerts = cluster.feed(
        [lifecycle_factory(ts=T0, role=before), lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + HOUR, role=after)]
    )
    assert of(alerts, ESCALATED) == []


def test_a_scope_change_of_a_key_whose_creation_was_never_seen_is_not_decided(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """Without a previous role there is nothing to compare with."""
    cluster = cluster_factory()
    assert of(cluster.feed([lifecycle_factory(type="apiKey.scopeChanged", ts=T0, role="admin")]), ESCALATED) == []


def test_the_roles_table_decides_what_is_an_escalation(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """With billing_admin ranked 2, standard -> billing_admin is quiet; with the default (3) it fires."""
    events = [
        lifecycle_factory(ts=T0, role="standard"),
        lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + HOUR, role="billing_admin"),
    ]
    assert len(of(cluster_factory().feed(events), ESCALATED)) == 1
    assert of(cluster_factory(roles={"billing_admin": 2}).feed(events), ESCALATED) == []
    assert of(cluster_factory(privilege={"enabled": False}).feed(events), ESCALATED) == []


def _scope_story(lifecycle_factory: Callable[..., LifecycleEvent]) -> list[LifecycleEvent]:
    """admin, narrowed to read_only, widened to admin again, to reporting, to standard (2 escalations)."""
    return [
        lifecycle_factory(ts=T0, role="admin"),
        lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + 1 * HOUR, role="read_only"),
        lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + 2 * HOUR, role="admin"),
        lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + 3 * HOUR, role="reporting"),
        lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + 4 * HOUR, role="standard"),
    ]


def test_out_of_order_scope_changes_are_decided_by_event_time(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """The narrowing change arriving after the widening one (and the creation last) gives the alerts of the
    event-time order, ids and times included."""
    story = _scope_story(lifecycle_factory)
    in_order = of(cluster_factory().feed(story), ESCALATED)
    assert [a.data.evidence["new_role"] for a in in_order] == ["admin", "standard"]
    for order in ([0, 2, 1, 3, 4], [2, 4, 3, 1, 0], [4, 3, 2, 1, 0], [1, 0, 4, 2, 3]):
        shuffled = of(cluster_factory().feed([story[i] for i in order]), ESCALATED)
        # (a late event may repeat an alert already raised: the same id, a duplicate)
        assert {(a.id, a.time) for a in shuffled} == {(a.id, a.time) for a in in_order}, order


# -- privilegeEscalated: rotations --------------------------------------------------------------------------


def _rotation(lifecycle_factory: Callable[..., LifecycleEvent], old_role: str, new_role: str) -> list[LifecycleEvent]:
    return [
        lifecycle_factory(ts=T0, key_id="key-old", role=old_role),
        lifecycle_factory(
            ts=T0 + HOUR, key_id="key-new", role=new_role, replaces_key_id="key-old", actor="mallory@example.com",
            channel="portal", mfa=True,
        ),
    ]  # fmt: skip


def test_a_rotation_to_a_wider_role_fires_on_the_new_key_at_its_creation(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """reporting (1) replaced by an admin key (3): the new key's alert, at its creation time, naming the old key."""
    alerts = cluster_factory().feed(_rotation(lifecycle_factory, "reporting", "admin"))
    [alert] = of(alerts, ESCALATED)
    assert alert.data.key_id == "key-new"
    assert alert.time.timestamp() * 1000 == T0 + HOUR
    evidence = alert.data.evidence
    assert evidence["how"] == "rotation"
    assert (evidence["previous_role"], evidence["new_role"], evidence["replaces_key_id"]) == (
        "reporting", "admin", "key-old",
    )  # fmt: skip
    assert (evidence["actor"], evidence["channel"], evidence["mfa"]) == ("mallory@example.com", "portal", True)


def test_a_same_role_or_narrower_rotation_is_quiet(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """The routine rotation keeps the role; a narrower one is fine too; `rotations = false` turns it off."""
    assert of(cluster_factory().feed(_rotation(lifecycle_factory, "admin", "admin")), ESCALATED) == []
    assert of(cluster_factory().feed(_rotation(lifecycle_factory, "admin", "read_only")), ESCALATED) == []
    off = cluster_factory(privilege={"rotations": False})
    assert of(off.feed(_rotation(lifecycle_factory, "reporting", "admin")), ESCALATED) == []


def test_a_rotation_of_a_key_keywatch_never_saw_created_is_not_decided(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """The replaced key's role is unknown: nothing to compare."""
    [_, new] = _rotation(lifecycle_factory, "reporting", "admin")
    assert of(cluster_factory().feed([new]), ESCALATED) == []


def test_the_replaced_keys_role_is_the_one_it_had_at_the_rotation(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """A narrowing of the old key after the rotation (seen before the hand-off arrives) does not count."""
    old, new = _rotation(lifecycle_factory, "admin", "admin")
    later = lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + 2 * HOUR, key_id="key-old", role="read_only")
    cluster = cluster_factory()
    cluster.feed([old])
    cluster.feed([new], deliver=False)
    cluster.feed([later], deliver=False)
    cluster.deliver()
    assert of(cluster.alerts, ESCALATED) == []


def _lines(events: list[LifecycleEvent]) -> list[bytes]:
    return [e.model_dump_json(exclude_none=True).encode() for e in events]


def test_the_rotation_path_gives_the_same_alert_in_replay_and_with_late_forwards(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """keywatch.replay (forwards applied at once) and a worker-like run (the hand-offs delivered late, after
    other keys' events) give the same alert: id, time, evidence."""
    events = [
        *_rotation(lifecycle_factory, "reporting", "admin"),
        lifecycle_factory(ts=T0 + 2 * HOUR, key_id="key-other", role="standard"),
        lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + 3 * HOUR, key_id="key-other", role="read_only"),
    ]
    replayed: list[Alert] = []
    replay([], _lines(events), build_engine(detection_config_from_mapping(None), "/keywatch/test"), replayed.append)
    cluster = cluster_factory()
    cluster.feed(events, deliver=False)  # every hand-off still in flight
    cluster.deliver()
    [by_replay] = of(replayed, ESCALATED)
    [by_worker] = of(cluster.alerts, ESCALATED)
    assert by_worker.model_dump_json() == by_replay.model_dump_json()


# -- managedOutsidePortal -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "mfa", "reasons"),
    [
        ("api", None, ["channel 'api'"]),
        ("api", True, ["channel 'api'"]),
        ("terraform", False, ["channel 'terraform'", "without MFA"]),
        ("portal", False, ["without MFA"]),
        (None, False, ["without MFA"]),
    ],
)
def test_a_lifecycle_event_outside_the_portal_or_without_mfa_fires_critical(
    cluster_factory: Callable[..., Cluster],
    lifecycle_factory: Callable[..., LifecycleEvent],
    channel: str | None,
    mfa: bool | None,
    reasons: list[str],
) -> None:
    """One critical alert per event, with the channel, MFA flag, actor and operation."""
    cluster = cluster_factory()
    event = lifecycle_factory(type="apiKey.revoked", ts=T0, channel=channel, mfa=mfa, ip="203.0.113.7")
    [alert] = of(cluster.feed([event]), OUTSIDE)
    assert alert.data.severity == "critical"
    evidence = alert.data.evidence
    assert evidence["reasons"] == reasons
    assert (evidence["channel"], evidence["mfa"], evidence["operation"]) == (channel, mfa, "apiKey.revoked")
    assert (evidence["actor"], evidence["actor_ip"]) == ("alice@example.com", "203.0.113.7")
    # the same event again: the same id (a duplicate, never a second alert)
    [again] = of(cluster.feed([event]), OUTSIDE)
    assert again.id == alert.id


@pytest.mark.parametrize(("channel", "mfa"), [("portal", True), ("Portal", True), (None, None), ("portal", None)])
def test_portal_events_with_mfa_and_old_records_are_quiet(
    cluster_factory: Callable[..., Cluster],
    lifecycle_factory: Callable[..., LifecycleEvent],
    channel: str | None,
    mfa: bool | None,
) -> None:
    """The portal with MFA is the rule; absent fields (older records) never fire."""
    alerts = cluster_factory().feed([lifecycle_factory(ts=T0, channel=channel, mfa=mfa)])
    assert of(alerts, OUTSIDE) == []


def test_portal_channels_and_mfa_are_configurable(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """Another portal channel name, and MFA not required."""
    cluster = cluster_factory(portal={"portal_channels": ["portal", "console"], "require_mfa": False})
    assert of(cluster.feed([lifecycle_factory(ts=T0, channel="console", mfa=False)]), OUTSIDE) == []
    assert len(of(cluster.feed([lifecycle_factory(ts=T0 + 1, channel="api", mfa=False)]), OUTSIDE)) == 1


# -- lifecycleBurst -----------------------------------------------------------------------------------------


def _ops(
    lifecycle_factory: Callable[..., LifecycleEvent], actor: str, times: list[int], first_key: int = 0
) -> list[LifecycleEvent]:
    """One operation per time by `actor`: creations, every third one a scope change of the key just made."""
    events = []
    for i, at in enumerate(times):
        n = first_key + (i if i % 3 != 2 else i - 1)
        kind = "apiKey.scopeChanged" if i % 3 == 2 else "apiKey.created"
        events.append(lifecycle_factory(type=kind, ts=at, key_id=f"key-{n}", role="admin", actor=actor))
    return events


def test_an_actor_with_many_operations_in_the_window_fires_one_tenant_alert(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """9 operations in 6 minutes: one alert, about the tenant, at the 5th operation, with the evidence."""
    times = [T0 + i * 45_000 for i in range(9)]
    alerts = cluster_factory().feed(_ops(lifecycle_factory, "mallory@example.com", times))
    [alert] = of(alerts, BURST)
    assert (alert.data.tenant, alert.data.key_id, alert.data.env, alert.subject) == ("acme", None, None, "acme")
    assert alert.data.severity == "high"
    assert alert.time.timestamp() * 1000 == times[4]
    evidence = alert.data.evidence
    assert evidence["actor"] == "mallory@example.com"
    assert evidence["operations"] == 5
    assert evidence["by_type"] == {"apiKey.created": 4, "apiKey.scopeChanged": 1}
    assert evidence["key_ids"] == ["key-0", "key-1", "key-3", "key-4"]
    assert (evidence["first"], evidence["last"]) == ("2024-03-04T00:00:00.000Z", "2024-03-04T00:03:00.000Z")


@pytest.mark.parametrize(
    "times",
    [
        [T0 + i * 2 * MINUTE for i in range(4)],  # 4 in 10 minutes
        [T0 + i * 24 * MINUTE for i in range(6)],  # 6 spread over 2 hours
        [T0 + i * 150_001 for i in range(5)],  # 5, just over 10 minutes from first to last
    ],
)
def test_too_few_or_too_spread_operations_are_quiet(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent], times: list[int]
) -> None:
    """Below min_operations within the window: no alert."""
    assert of(cluster_factory().feed(_ops(lifecycle_factory, "alice@example.com", times)), BURST) == []


def test_two_actors_are_counted_apart(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """Two admins with 3 operations each in the same 10 minutes: no one did 5."""
    events = [
        *_ops(lifecycle_factory, "alice@example.com", [T0 + i * MINUTE for i in range(3)]),
        *_ops(lifecycle_factory, "bob@example.com", [T0 + 30_000 + i * MINUTE for i in range(3)], first_key=10),
    ]
    assert of(cluster_factory().feed(sorted(events, key=lambda e: e.ts)), BURST) == []


def test_a_second_burst_later_is_a_second_alert(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """Two bursts an hour apart: two alerts with their own ids; a disabled detector is quiet."""
    times = [T0 + i * MINUTE for i in range(5)] + [T0 + HOUR + i * MINUTE for i in range(6)]
    events = _ops(lifecycle_factory, "mallory@example.com", times)
    alerts = of(cluster_factory().feed(events), BURST)
    assert len({a.id for a in alerts}) == 2
    assert of(cluster_factory(lifecycle_burst={"enabled": False}).feed(events), BURST) == []


def test_the_tenant_counts_with_the_live_settings_and_its_own_overrides(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """A tenant alert spans both environments: the tenant decides with the live environment's settings and the
    tenant's overrides; a sandbox section's `enabled = false` leaves the sandbox keys' operations out, its other
    settings do not apply."""
    times = [T0 + i * MINUTE for i in range(5)]
    events = _ops(lifecycle_factory, "mallory@example.com", times)
    mixed = [e.model_copy(update={"env": "sandbox"}) if i % 2 else e for i, e in enumerate(events)]
    assert len(of(cluster_factory().feed(mixed), BURST)) == 1
    sandbox_off = detection_config_from_mapping({"sandbox": {"lifecycle_burst": {"enabled": False}}})
    assert of(cluster_factory(config=sandbox_off).feed(mixed), BURST) == []
    sandbox_more = detection_config_from_mapping({"sandbox": {"lifecycle_burst": {"min_operations": 10}}})
    assert len(of(cluster_factory(config=sandbox_more).feed(mixed), BURST)) == 1
    three = _ops(lifecycle_factory, "mallory@example.com", times[:3])
    assert of(cluster_factory().feed(three), BURST) == []
    tenant_fewer = detection_config_from_mapping({"tenant": {"acme": {"lifecycle_burst": {"min_operations": 3}}}})
    assert len(of(cluster_factory(config=tenant_fewer).feed(three), BURST)) == 1


def test_a_burst_has_the_same_id_whatever_order_the_hand_offs_reach_the_tenant(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """The keys' hand-offs delivered late (after every key's events, as from other partitions): the alert of
    replay, time and evidence included; delivered shuffled: one alert, with replay's id (its time and evidence
    are those of the operations known when it fired)."""
    times = [T0 + i * 40_000 for i in range(8)]
    events = _ops(lifecycle_factory, "mallory@example.com", times)
    replayed: list[Alert] = []
    replay([], _lines(events), build_engine(detection_config_from_mapping(None), "/keywatch/test"), replayed.append)
    [expected] = of(replayed, BURST)
    late = cluster_factory()
    late.feed(events, deliver=False)
    late.deliver()
    [alert] = of(late.alerts, BURST)
    assert orjson.loads(alert.model_dump_json()) == orjson.loads(expected.model_dump_json())
    rng = random.Random(13)
    for _ in range(30):
        # each hand-off late by up to a minute of event time (less than the burst lasts): replay's id
        cluster = cluster_factory()
        cluster.feed(events, deliver=False)
        delays = {id(f): f.ts_ms + rng.randrange(60_000) for f in cluster.pending}
        cluster.pending.sort(key=lambda f: delays[id(f)])
        cluster.deliver()
        assert ids(cluster.alerts, BURST) == [expected.id]
        # in any order at all: still one alert (its id is replay's unless the first operations came last)
        cluster = cluster_factory()
        cluster.feed(events, deliver=False)
        rng.shuffle(cluster.pending)
        cluster.deliver()
        assert len(of(cluster.alerts, BURST)) == 1


def test_the_tenants_burst_state_is_bounded(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """Many actors and a long stream of operations: the tenant keeps at most the caps."""
    from keywatch.core import lifecycle_burst

    cluster = cluster_factory()
    events = []
    for n in range(60):
        events += _ops(lifecycle_factory, f"user{n}@example.com", [T0 + n * HOUR + i * 1000 for i in range(3)], n * 10)
    events += _ops(lifecycle_factory, "bot@example.com", [T0 + 70 * HOUR + i * 1000 for i in range(100)], 1000)
    cluster.feed(events)
    tenant = cluster.states["acme/"].detectors[lifecycle_burst.NAME]
    assert len(tenant.actors) <= lifecycle_burst.MAX_ACTORS
    assert all(len(a.ops) <= lifecycle_burst.MAX_OPS for a in tenant.actors.values())
    assert len(of(cluster.alerts, BURST)) == 1


# -- the contract fields on the keyed topic -------------------------------------------------------------------


def test_channel_and_mfa_ride_the_keyed_topic_and_old_entries_still_expand(
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """compact/expand keep channel and mfa; an entry written before them expands with both absent."""
    event = lifecycle_factory(ts=T0, channel="api", mfa=False)
    back = expand(orjson.loads(orjson.dumps(compact(event))))
    assert back == event
    old = orjson.loads(orjson.dumps(compact(lifecycle_factory(ts=T0))))[:-2]  # as written before the fields
    older = expand(old)
    assert isinstance(older, LifecycleEvent)
    assert (older.channel, older.mfa, older.actor) == (None, None, "alice@example.com")


@pytest.mark.parametrize("mfa", ["yes", 1, 0, "true", [], {}])
def test_mfa_must_be_a_boolean(lifecycle_factory: Callable[..., LifecycleEvent], mfa: Any) -> None:
    """`mfa` is a JSON boolean: "yes", 1 and the like are rejected; null is absent."""
    with pytest.raises(ValueError, match="mfa"):
        lifecycle_factory(mfa=mfa)
    assert lifecycle_factory(mfa=None).mfa is None


@pytest.mark.parametrize("channel", ["", "x" * 65, 7, True])
def test_channel_is_a_bounded_string(lifecycle_factory: Callable[..., LifecycleEvent], channel: Any) -> None:
    """`channel` is 1-64 characters of text."""
    with pytest.raises(ValueError, match="channel"):
        lifecycle_factory(channel=channel)


# -- the worker's detect path ---------------------------------------------------------------------------------


def _worker(lines: list[bytes], partitions: int) -> list[Alert]:
    """The worker's detect path: lifecycle events packed per keyed-topic partition, each partition's messages
    processed in turn, then the forwards (rotation hand-offs, operations for the tenant) as keyed messages."""
    sink = MemorySink()
    store: dict[bytes, bytes] = {}
    engine = make_engine(Settings())
    processor = Processor(engine, sink, Topics("requests", "lifecycle"), metrics=None)

    async def run() -> None:
        batch = [("lifecycle", 0, i, None, line) for i, line in enumerate(lines)]
        out = processor.pack_batch(batch, lambda subject: zlib.crc32(subject) % partitions)
        for partition in sorted(out.keyed, reverse=True):  # not in event-time order across partitions
            for value in out.keyed[partition]:
                await processor.detect_message(None, value, store, partition)
        delivered = 0
        while delivered < len(sink.messages["keyed"]):
            key, value = sink.messages["keyed"][delivered]
            delivered += 1
            await processor.detect_message(key, value, store, 0)

    asyncio.run(run())
    return [Alert.model_validate_json(value) for _, value in sink.messages["alerts"]]


def test_the_worker_detect_path_gives_replays_lifecycle_alerts(
    lifecycle_factory: Callable[..., LifecycleEvent],
) -> None:
    """A rotation to a wider role, a scope change, API-channel events and a burst over many keys on several
    partitions: the worker's alerts are replay's, ids included."""
    events = [
        *_rotation(lifecycle_factory, "reporting", "admin"),
        lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + 2 * HOUR, key_id="key-old", role="admin", channel="api"),
        *_ops(lifecycle_factory, "mallory@example.com", [T0 + 3 * HOUR + i * 50_000 for i in range(7)]),
    ]
    lines = _lines(events)
    replayed: list[Alert] = []
    replay([], lines, make_engine(Settings()), replayed.append)
    by_worker = _worker(lines, partitions=4)
    for alert_type in (ESCALATED, OUTSIDE, BURST):
        assert ids(by_worker, alert_type) == ids(replayed, alert_type), alert_type
        assert ids(by_worker, alert_type)


def test_a_burst_whose_hand_offs_arrive_a_day_late_still_fires(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """A backlog caught up: the actor's operation of the next day reaches the tenant first, the burst's five
    a day later (in event time) after it; the burst fires with replay's id."""
    burst = _ops(lifecycle_factory, "alice@example.com", [T0 + i * 1000 for i in range(5)])
    later = lifecycle_factory(type="apiKey.revoked", ts=T0 + 26 * HOUR, key_id="key-0", actor="alice@example.com")
    in_order = cluster_factory()
    in_order.feed([*burst, later])
    late = cluster_factory()
    late.feed([*burst, later], deliver=False)
    late.pending.insert(0, late.pending.pop())  # the next day's hand-off first
    late.deliver()
    assert ids(late.alerts, BURST) == ids(in_order.alerts, BURST)
    assert len(ids(late.alerts, BURST)) == 1


def test_a_keys_role_history_is_bounded(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """Many scope changes keep the last MAX_ROLES roles; one older than all of them is ignored."""
    from keywatch.core import privilege

    cluster = cluster_factory()
    roles = ["read_only", "admin"] * 10
    cluster.feed([lifecycle_factory(ts=T0, role="read_only")])
    cluster.feed(
        [lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + (i + 1) * HOUR, role=r) for i, r in enumerate(roles)]
    )
    assert len(of(cluster.alerts, ESCALATED)) == 10
    kept = cluster.states["acme/key-1"].detectors[privilege.NAME].roles
    assert len(kept) == privilege.MAX_ROLES
    old = lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + 30 * MINUTE, role="admin")
    assert of(cluster.feed([old]), ESCALATED) == []
