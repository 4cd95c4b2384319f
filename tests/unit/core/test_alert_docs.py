"""docs/alerts.md documents every registered detector: a section per alert type at its runbook anchor, and the
detector's settings section."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from coretest import docs_problems

from keywatch.contract.alerts import Alert
from keywatch.core import catalog
from keywatch.core.spec import DetectorSpec

DOC = Path(__file__).resolve().parents[3] / "docs" / "alerts.md"


@pytest.mark.parametrize("spec", catalog.specs(), ids=lambda spec: spec.name)
def test_every_detector_is_documented(spec: DetectorSpec[Any, Any]) -> None:
    """Each alert type of the detector has its section, and its [detection.<name>] settings are documented."""
    assert docs_problems(spec, DOC.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("alert_type", catalog.alert_types())
def test_runbook_link_points_at_the_declared_anchor(alert_type: str) -> None:
    """The anchor of Alert.build's runbook URL is the one the detector's spec declares for the type."""
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
    assert alert.data.runbook.rsplit("#", 1)[1] == catalog.spec_of_type(alert_type).alert(alert_type).anchor


def test_docs_check_finds_a_missing_section() -> None:
    """The check is not vacuous: a page without the spike section fails it."""
    text = DOC.read_text(encoding="utf-8").replace("## requestspike", "## spikes")
    assert docs_problems(catalog.spec_of_type("apiKey.requestSpike"), text) == [
        "apiKey.requestSpike: no '## requestspike' section"
    ]


def test_docs_check_finds_a_section_without_triage() -> None:
    """A type's section must say how to triage it and what to do."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## rotationstalled")
    section = text[start : text.index("\n## ", start + 1)]
    cut = text.replace(section, section.replace("**Triage**", "**Notes**").replace("**What to do**", "**Then**"))
    assert docs_problems(catalog.spec_of_type("apiKey.rotationStalled"), cut) == [
        "apiKey.rotationStalled: no **Triage** in its section",
        "apiKey.rotationStalled: no **What to do** in its section",
    ]
