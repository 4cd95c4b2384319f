"""`keywatch tail` formatting and filters."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from keywatch.cli.tail import format_alert, matches, read_alert

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["id", "type", "time", "subject", "data", "severity", "tenant", "x"]), inner)
    ),
    max_leaves=12,
)


def _alert(**data: Any) -> dict[str, Any]:
    base = {"tenant": "acme", "key_id": "k1", "severity": "high", "summary": "Something happened."}
    base.update(data)
    return {
        "id": "abc",
        "type": "apiKey.usedAfterRevoke",
        "time": "2026-01-05T12:00:00.000Z",
        "subject": "acme/k1",
        "data": base,
    }


def test_line_has_time_severity_type_subject_summary_id() -> None:
    """One readable line carries what a person needs to decide to look."""
    line = format_alert(_alert(), colour=False)
    for part in ("2026-01-05T12:00:00.000Z", "HIGH", "apiKey.usedAfterRevoke", "acme/k1", "Something happened.", "abc"):
        assert part in line


def test_colour_only_when_asked() -> None:
    """ANSI colour codes appear only with colour on."""
    assert "\x1b[" in format_alert(_alert(), colour=True)
    assert "\x1b[" not in format_alert(_alert(), colour=False)


def test_resolved_is_marked() -> None:
    """The end of an episode is marked RESOLVED."""
    assert "RESOLVED" in format_alert(_alert(status="resolved"), colour=False)


def test_filters() -> None:
    """Tenant, type and minimum severity filters each exclude what they should and keep the rest."""
    alert = _alert()
    assert matches(alert, (), (), "info")
    assert matches(alert, ("acme",), ("apiKey.usedAfterRevoke",), "high")
    assert not matches(alert, ("globex",), (), "info")
    assert not matches(alert, (), ("apiKey.created",), "info")
    assert not matches(alert, (), (), "critical")
    assert not matches({"data": {}}, (), (), "info")


@given(st.one_of(st.none(), st.binary(max_size=300), st.builds(orjson.dumps, _json)))
def test_read_alert_never_raises_and_says_why(raw: bytes | None) -> None:
    """Any bytes (or a tombstone): an alert dict tail can format, None, or a one-line reason; never an exception."""
    got = read_alert(raw)
    if raw is None:
        assert got is None
    elif isinstance(got, str):
        assert got
        assert "\n" not in got
    else:
        assert isinstance(got, dict)
        format_alert(got, colour=False)
        matches(got, ("acme",), ("apiKey.created",), "low")


def test_read_alert_cases() -> None:
    """Tombstones are nothing; garbage, wrong types and non-alerts are named; a real alert is read."""
    assert read_alert(None) is None
    assert read_alert(b"{oops") == "not JSON (unexpected character, expected a string key at position 1, 5 bytes)"
    assert read_alert(b"[1, 2]") == "a JSON list, not an object"
    assert read_alert(b'{"type": 7, "data": {}}') == "`type` is a int, not a string"
    assert read_alert(b'{"type": "apiKey.created", "data": "x"}') == "`data` is a str, not an object"
    assert read_alert(b'{"hello": 1}') == "neither `type` nor `data`: not an alert"
    assert read_alert(orjson.dumps(_alert())) == _alert()
