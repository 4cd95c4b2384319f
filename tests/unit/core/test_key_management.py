"""Key-management attempt (apiKey.keyManagementAttempt): paths and their encodings, once per key per hour."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from coretest import HOUR, MINUTE, T0, Cluster

from keywatch.config import ConfigError
from keywatch.contract.alerts import Alert
from keywatch.contract.events import RequestRecord
from keywatch.core.config import detection_config_from_mapping
from keywatch.core.key_management import DEFAULT_PATTERNS, KeyManagement, KeyManagementConfig, normalise_path

ATTEMPT = "apiKey.keyManagementAttempt"


def attempts(alerts: list[Alert]) -> list[Alert]:
    """Only the key-management alerts."""
    return [a for a in alerts if a.type == ATTEMPT]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/keys", "/v1/keys/", "/v1/keys/ak_123/rotate", "/v2/api-keys", "/v1/api_keys", "/v1/apikeys?limit=10",
        "/v1/credentials", "/v1/tokens/abc", "/V1/KEYS", "/v1//keys", "//v1///Api-Keys/x", "/v1/%6beys",
        "/v1/%6B%65%79%73?x=1", "/v1/./keys", "/v1/keys#frag", "/v1%2fkeys",
    ],
)  # fmt: skip
def test_key_management_paths_in_any_encoding_match(path: str) -> None:
    """The default patterns, on the path a router sees (case, slashes, percent-encoding, `.` segments)."""
    assert KeyManagement(KeyManagementConfig()).matches(path)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/keyboards", "/v1/tokenization", "/v1/customers/keys-report", "/v1/customers?filter=keys",
        "/keys", "/v1/monkeys", "/v1/credentials-check", "/v1/tokens-usage", "/v1/orders/keys", "/vx/keys",
    ],
)  # fmt: skip
def test_look_alike_paths_do_not_match(path: str) -> None:
    """Words that start like a key-management path, or hold one lower down, or in the query, do not."""
    assert not KeyManagement(KeyManagementConfig()).matches(path)


def test_normalise_path() -> None:
    """No query, decoded, collapsed."""
    assert normalise_path("/v1//%4Beys/./x?a=%2F") == "/v1/Keys/x"


def test_a_bad_pattern_is_a_config_error_naming_it() -> None:
    """A pattern that does not compile is refused at load time, named in the message."""
    with pytest.raises(ConfigError, match=r"\(unclosed"):
        detection_config_from_mapping({"key_management": {"path_patterns": ["^/v1/ok$", "(unclosed"]}})


def test_custom_patterns(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Configured patterns replace the defaults."""
    cluster = cluster_factory(key_management={"path_patterns": [r"^/admin/secrets"]})
    assert attempts(cluster.feed([request_factory(path="/v1/keys")])) == []
    assert len(attempts(cluster.feed([request_factory(path="/ADMIN//secrets/1")]))) == 1


@pytest.mark.parametrize(("status", "accepted"), [(403, False), (404, False), (201, True)])
def test_an_attempt_alerts_high_whatever_the_answer(
    cluster_factory: Callable[..., Cluster],
    request_factory: Callable[..., RequestRecord],
    status: int,
    accepted: bool,
) -> None:
    """Rejected or accepted, a key on a key-management path is a high alert with the request's facts."""
    cluster = cluster_factory()
    record = request_factory(ts=T0 + MINUTE, method="POST", path="/v1/api-keys?scope=admin", status=status)
    [alert] = attempts(cluster.feed([record]))
    ev = alert.data.evidence
    assert alert.severity == "high"
    assert alert.data.runbook.endswith("#keymanagementattempt")
    assert (ev["method"], ev["path"], ev["status"], ev["accepted"]) == ("POST", "/v1/api-keys", status, accepted)
    assert (ev["attempts_this_hour"], ev["first_attempt_at"]) == (1, "2024-03-04T00:01:00.000Z")


def test_long_paths_are_cut_without_query(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """The path in the evidence is at most 96 characters and never carries the query string."""
    cluster = cluster_factory()
    [alert] = attempts(cluster.feed([request_factory(path="/v1/keys/" + "x" * 300 + "?secret=1")]))
    assert len(alert.data.evidence["path"]) == 96
    assert "?" not in alert.data.evidence["path"]


def test_ordinary_requests_are_quiet_and_keep_no_state(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """The look-alikes of the simulator raise nothing."""
    cluster = cluster_factory()
    paths = ["/v1/keyboards", "/v1/tokenization", "/v1/customers/keys-report", "/v1/orders"]
    assert attempts(cluster.feed([request_factory(path=p) for p in paths])) == []
    assert "key_management" not in cluster.states["acme/key-1"].detectors


def test_once_per_key_per_hour_counting_the_rest(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """A burst of attempts is one alert per UTC hour; the next hour's alert counts the suppressed ones."""
    cluster = cluster_factory()
    burst = [request_factory(ts=T0 + 10 * MINUTE + i * MINUTE, method="POST", path="/v1/keys") for i in range(30)]
    assert len(attempts(cluster.feed(burst))) == 1
    [later] = attempts(cluster.feed([request_factory(ts=T0 + HOUR + 5 * MINUTE, path="/v1/credentials")]))
    ev = later.data.evidence
    assert (ev["suppressed_since_last_alert"], ev["attempts_total"], ev["attempts_this_hour"]) == (29, 31, 1)
    other = cluster.feed([request_factory(key_id="key-2", ts=T0 + 11 * MINUTE, path="/v1/keys")])
    assert len(attempts(other)) == 1  # per key


def test_ids_are_stable_under_reprocessing_and_late_records(
    cluster_factory: Callable[..., Cluster], request_factory: Callable[..., RequestRecord]
) -> None:
    """Same records, same ids; the id is the hour's, whichever of its attempts came first; a late record of the
    hour before alerts once under that hour's id."""
    runs = []
    for order in (1, 1, -1):
        cluster = cluster_factory()
        records = [request_factory(ts=T0 + HOUR + i * MINUTE, path="/v1/keys") for i in range(5)][::order]
        runs.append([a.id for a in attempts(cluster.feed(records))])
    assert runs[0] == runs[1] == runs[2]
    cluster = cluster_factory()
    first = attempts(cluster.feed([request_factory(ts=T0 + HOUR + MINUTE, path="/v1/keys")]))
    late = attempts(cluster.feed([request_factory(ts=T0 + HOUR - MINUTE, path="/v1/keys")]))
    again = attempts(cluster.feed([request_factory(ts=T0 + HOUR - 30_000, path="/v1/keys")]))
    assert (len(first), len(late), again) == (1, 1, [])
    assert first[0].id == runs[0][0]
    assert late[0].id != first[0].id


def test_the_default_prefilter_never_changes_a_verdict() -> None:
    """With the default patterns a cheap word check skips most paths; it answers what the patterns answer."""
    fast = KeyManagement(KeyManagementConfig())
    slow = KeyManagement(KeyManagementConfig(path_patterns=(f"(?:{DEFAULT_PATTERNS[0]})",)))  # same, unfiltered
    paths = [
        "/v1/keys", "/v1/%4B%45%59%53", "/V1/CREDENTIALS", "/v1/Tokens/", "/v1/api_KEYS/1", "/v1/orders",
        "/v1/customers/cus_1?key=1", "/v1/tokenization", "/v1/%2e/keys", "/v2//credentials", "/v1/keyring",
    ]  # fmt: skip
    for path in paths:
        assert fast.matches(path) == slow.matches(path), path
