"""Error burst (apiKey.4xxCluster): floors, baseline error share, kinds, episodes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from coretest import MINUTE, T0

from keywatch.contract.alerts import Alert
from keywatch.contract.events import RequestRecord
from keywatch.core.error_burst import ErrorBurst, ErrorBurstConfig
from keywatch.core.state import KeyState


class Feeder:
    """Drives one ErrorBurst detector."""

    def __init__(self, request_factory: Callable[..., RequestRecord], **config: Any) -> None:
        self.detector = ErrorBurst(ErrorBurstConfig(**config), source="/keywatch/test")
        self.state = KeyState(tenant="acme", key_id="key-1")
        self.make = request_factory
        self.alerts: list[Alert] = []

    def minute(self, start_ms: int, ok: int, errors: int = 0, *, status: int = 401, **fields: Any) -> list[Alert]:
        """`ok` 200s then `errors` answers with `status` in the minute from `start_ms`."""
        out: list[Alert] = []
        good = self.make(ts=start_ms)
        for i in range(ok):
            out += self.detector.on_request(self.state, good, start_ms + i)
        for i in range(errors):
            bad = self.make(ts=start_ms + ok + i, status=status, **{k: v(i) for k, v in fields.items()})
            out += self.detector.on_request(self.state, bad, start_ms + ok + i)
        self.alerts += out
        return out


@pytest.fixture
def feeder(request_factory: Callable[..., RequestRecord]) -> Callable[..., Feeder]:
    """A Feeder with the given ErrorBurstConfig overrides."""
    return lambda **config: Feeder(request_factory, **config)


@pytest.mark.parametrize(
    ("status", "kind", "severity"),
    [
        (401, "credential_failure", "medium"),
        (403, "scope_probing", "high"),
        (404, "enumeration", "medium"),
        (429, "throttling", "low"),
        (418, "other", "low"),
    ],
)
def test_burst_of_each_kind_alerts_with_its_kind(
    feeder: Callable[..., Feeder], status: int, kind: str, severity: str
) -> None:
    """A burst of one 4xx kind on a clean key alerts with that kind and severity."""
    f = feeder()
    for m in range(60):
        f.minute(T0 + m * MINUTE, 20)
    [alert] = f.minute(T0 + 60 * MINUTE, 5, 120, status=status)
    ev = alert.data.evidence
    assert (alert.type, ev["kind"], alert.severity, alert.data.status) == (
        "apiKey.4xxCluster",
        kind,
        severity,
        "firing",
    )
    assert alert.data.runbook.endswith("#4xxcluster")


def test_evidence_counts_paths_and_ips(feeder: Callable[..., Feeder]) -> None:
    """Evidence has per-status counts, totals, ratio, distinct and top paths (query dropped) and top IPs."""
    f = feeder()
    f.minute(T0, 10)
    [alert] = f.minute(
        T0 + MINUTE,
        0,
        25,
        status=404,
        path=lambda i: f"/v1/users/{i}?token=secret",
        ip=lambda i: f"203.0.113.{i % 2 + 1}",
    )
    ev = alert.data.evidence
    assert ev["counts"] == {"401": 0, "403": 0, "404": 20, "429": 0, "other_4xx": 0}
    assert (ev["errors"], ev["total"], ev["ratio"], ev["baseline_ratio"]) == (20, 30, 0.667, 0.0)
    assert ev["distinct_paths"] == 20
    assert all("?" not in path for path, _ in ev["top_paths"])
    assert len(ev["top_paths"]) == 5
    assert ev["top_ips"] == [["203.0.113.1", 10], ["203.0.113.2", 10]]


def test_few_errors_do_not_alert(feeder: Callable[..., Feeder]) -> None:
    """Fewer than min_errors 4xx, even at a 100% ratio, raise nothing."""
    f = feeder()
    assert f.minute(T0, 0, 19) == []


def test_low_ratio_does_not_alert(feeder: Callable[..., Feeder]) -> None:
    """Many 401s among many more successes (ratio < 0.5) raise nothing."""
    f = feeder()
    assert f.minute(T0, 200, 60) == []


def test_key_that_always_errs_is_judged_against_its_baseline(feeder: Callable[..., Feeder]) -> None:
    """A client that always gets ~60% 404s alerts at most once while new, then not even at 70%."""
    f = feeder()
    for m in range(120):
        f.minute(T0 + m * MINUTE, 16, 24, status=404)
    assert [a.data.status for a in f.alerts] in ([], ["firing", "resolved"])
    assert f.minute(T0 + 120 * MINUTE, 12, 28, status=404) == []
    assert f.detector.baseline_ratio(f.state.detectors["err"], 3) == pytest.approx(0.6, abs=0.01)


def test_episode_per_kind_and_resolution(feeder: Callable[..., Feeder]) -> None:
    """401 and 403 bursts are separate episodes; each resolves with its episode_id after calm minutes."""
    f = feeder()
    f.minute(T0, 10)
    f.minute(T0 + MINUTE, 0, 30, status=401)
    f.minute(T0 + 2 * MINUTE, 0, 80, status=403)
    f.minute(T0 + 3 * MINUTE, 0, 30, status=401)
    firing = [a for a in f.alerts if a.data.status == "firing"]
    assert sorted(a.data.evidence["kind"] for a in firing) == ["credential_failure", "scope_probing"]
    for m in range(4, 20):
        f.minute(T0 + m * MINUTE, 20)
    resolved = [a for a in f.alerts if a.data.status == "resolved"]
    assert {a.data.episode_id for a in resolved} == {a.data.episode_id for a in firing}
    assert {a.id for a in resolved}.isdisjoint({a.id for a in firing})
    assert "ep" not in f.state.detectors["err"]


def test_late_errors_within_window_count_and_older_are_dropped(feeder: Callable[..., Feeder]) -> None:
    """A late 4xx inside the window is counted in its minute; one older than the window is dropped."""
    f = feeder()
    f.minute(T0 + 10 * MINUTE, 1)
    f.minute(T0 + 8 * MINUTE, 0, 1, status=401)
    f.minute(T0 + 2 * MINUTE, 0, 1, status=401)
    st = f.state.detectors["err"]
    assert (st["w"][0], st["w"][1], st["x"]) == (2, 1, 1)


def test_same_input_twice_gives_same_ids(feeder: Callable[..., Feeder]) -> None:
    """Replaying a burst yields the same alert and episode ids."""
    runs = []
    for _ in range(2):
        f = feeder()
        f.minute(T0, 10)
        f.minute(T0 + MINUTE, 0, 30, status=403)
        for m in range(2, 15):
            f.minute(T0 + m * MINUTE, 10)
        runs.append([(a.id, a.data.episode_id) for a in f.alerts])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 2
