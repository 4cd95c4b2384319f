"""Revoked key still in use (apiKey.usedAfterRevoke): grace period, suppression with counting."""

from __future__ import annotations

from collections.abc import Callable

from coretest import HOUR, MINUTE, T0, Cluster

from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent, RequestRecord

AFTER_REVOKE = "apiKey.usedAfterRevoke"


def after_revoke(alerts: list[Alert]) -> list[Alert]:
    """Only the used-after-revoke alerts."""
    return [a for a in alerts if a.type == AFTER_REVOKE]


def revoked_cluster(
    cluster_factory: Callable[..., Cluster], lifecycle_factory: Callable[..., LifecycleEvent]
) -> Cluster:
    """key-1 created at T0 - 1 day and revoked by bob at T0."""
    cluster = cluster_factory()
    cluster.feed([lifecycle_factory(ts=T0 - 24 * HOUR), lifecycle_factory(type="apiKey.revoked", ts=T0, actor="bob")])
    return cluster


def test_use_within_grace_is_quiet(
    cluster_factory: Callable[..., Cluster],
    lifecycle_factory: Callable[..., LifecycleEvent],
    request_factory: Callable[..., RequestRecord],
) -> None:
    """Requests up to grace_seconds (60 s) after revocation are in flight, not alerts."""
    cluster = revoked_cluster(cluster_factory, lifecycle_factory)
    assert after_revoke(cluster.feed([request_factory(ts=T0 + 59_000), request_factory(ts=T0 + 60_000)])) == []


def test_use_after_grace_alerts_high_with_evidence(
    cluster_factory: Callable[..., Cluster],
    lifecycle_factory: Callable[..., LifecycleEvent],
    request_factory: Callable[..., RequestRecord],
) -> None:
    """A rejected request after the grace period is a high alert naming who revoked it and when."""
    cluster = revoked_cluster(cluster_factory, lifecycle_factory)
    [alert] = after_revoke(cluster.feed([request_factory(ts=T0 + 5 * MINUTE, status=401, path="/v1/x?k=1")]))
    ev = alert.data.evidence
    assert alert.severity == "high"
    assert (ev["revoked_at"], ev["revoked_by"], ev["seconds_since_revoke"]) == (
        "2024-03-04T00:00:00.000Z",
        "bob",
        300.0,
    )
    assert (ev["ip"], ev["path"], ev["status"], ev["accepted"]) == ("192.0.2.10", "/v1/x", 401, False)
    assert alert.data.runbook.endswith("#usedafterrevoke")


def test_accepted_use_after_revoke_is_critical(
    cluster_factory: Callable[..., Cluster],
    lifecycle_factory: Callable[..., LifecycleEvent],
    request_factory: Callable[..., RequestRecord],
) -> None:
    """A revoked key the gateway still answers with 2xx is critical: the revocation did not take."""
    cluster = revoked_cluster(cluster_factory, lifecycle_factory)
    [alert] = after_revoke(cluster.feed([request_factory(ts=T0 + 5 * MINUTE, status=200)]))
    assert alert.severity == "critical"


def test_repeats_are_suppressed_and_counted(
    cluster_factory: Callable[..., Cluster],
    lifecycle_factory: Callable[..., LifecycleEvent],
    request_factory: Callable[..., RequestRecord],
) -> None:
    """Within the hour after an alert further uses are counted, and the next alert reports how many."""
    cluster = revoked_cluster(cluster_factory, lifecycle_factory)
    uses = [request_factory(ts=T0 + 2 * MINUTE + i * MINUTE, status=401) for i in range(30)]
    assert len(after_revoke(cluster.feed(uses))) == 1
    [later] = after_revoke(cluster.feed([request_factory(ts=T0 + 2 * MINUTE + HOUR, status=401)]))
    assert (later.data.evidence["suppressed_since_last_alert"], later.data.evidence["uses_after_revoke"]) == (29, 31)


def test_request_processed_before_the_revocation_is_not_flagged(
    cluster_factory: Callable[..., Cluster],
    lifecycle_factory: Callable[..., LifecycleEvent],
    request_factory: Callable[..., RequestRecord],
) -> None:
    """An active key's requests raise nothing, and a late request from before the revocation neither."""
    cluster = cluster_factory()
    cluster.feed([lifecycle_factory(ts=T0 - HOUR)])
    assert after_revoke(cluster.feed([request_factory(ts=T0 + HOUR)])) == []
    cluster.feed([lifecycle_factory(type="apiKey.revoked", ts=T0)])
    assert after_revoke(cluster.feed([request_factory(ts=T0 - MINUTE)])) == []


def test_same_input_twice_gives_same_ids(
    cluster_factory: Callable[..., Cluster],
    lifecycle_factory: Callable[..., LifecycleEvent],
    request_factory: Callable[..., RequestRecord],
) -> None:
    """Replaying revoke-then-use gives the same alert id; a later incident a different one."""
    ids = []
    for _ in range(2):
        cluster = revoked_cluster(cluster_factory, lifecycle_factory)
        alerts = after_revoke(cluster.feed([request_factory(ts=T0 + 5 * MINUTE), request_factory(ts=T0 + 2 * HOUR)]))
        ids.append([a.id for a in alerts])
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == 2
