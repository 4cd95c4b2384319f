"""`keywatch tail` formatting and filters."""

from __future__ import annotations

from typing import Any

from keywatch.cli.tail import format_alert, matches


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
