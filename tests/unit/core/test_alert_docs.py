"""docs/alerts.md has a section for every alert type, at the anchor its runbook link points to."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keywatch.contract.alerts import Alert

DOC = Path(__file__).resolve().parents[3] / "docs" / "alerts.md"
TYPES = [
    "apiKey.created",
    "apiKey.scopeChanged",
    "apiKey.revoked",
    "apiKey.usedFromNewIp",
    "apiKey.requestSpike",
    "apiKey.4xxCluster",
    "apiKey.usedAfterRevoke",
]


@pytest.mark.parametrize("alert_type", TYPES)
def test_runbook_anchor_has_a_section(alert_type: str) -> None:
    """The anchor in Alert.build's runbook URL is a level-2 heading of docs/alerts.md."""
    alert = Alert.build(
        type=alert_type,
        id_parts=("x",),
        source="/k",
        time=datetime(2024, 3, 4, tzinfo=UTC),
        tenant="acme",
        key_id="key-1",
        env="live",
        severity="low",
        summary="s",
        evidence={},
    )
    anchor = alert.data.runbook.rsplit("#", 1)[1]
    headings = {h.strip().lower() for h in re.findall(r"^## (.+)$", DOC.read_text(encoding="utf-8"), re.MULTILINE)}
    assert anchor in headings
    assert f"`{alert_type}`" in DOC.read_text(encoding="utf-8")
