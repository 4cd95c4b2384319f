"""The output seam (sinks/base.py): a SinkSet drives its sinks' lifecycle and isolates optional sinks' failures."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from keywatch.contract.alerts import Alert
from keywatch.sinks.alertmanager import to_postable
from keywatch.sinks.base import OutputSink, SinkSet, Undeliverable


def _alert(n: int = 0, *, key_id: str | None = "k1") -> Alert:
    return Alert.build(
        type="apiKey.usedFromNewIp",
        id_parts=(str(n),),
        source="/keywatch/test",
        time=datetime(2026, 3, 1, tzinfo=UTC),
        tenant="acme",
        key_id=key_id,
        env=None if key_id is None else "live",
        severity="high",
        summary="a summary",
        evidence={"n": n},
    )


class Recording(OutputSink[Alert]):
    """Records the calls it gets in a shared log; fails `write` when told."""

    def __init__(self, name: str, log: list[str], *, required: bool = True, fail: Exception | None = None) -> None:
        self.name = name
        self.required = required
        self.log = log
        self.fail = fail
        self.written: list[str] = []

    async def start(self) -> None:
        self.log.append(f"{self.name}.start")

    async def write(self, items: Sequence[Alert]) -> None:
        self.log.append(f"{self.name}.write")
        if self.fail is not None:
            raise self.fail
        self.written.extend(alert.id for alert in items)

    async def flush(self) -> None:
        self.log.append(f"{self.name}.flush")

    async def stop(self) -> None:
        self.log.append(f"{self.name}.stop")


async def test_a_sink_set_drives_each_sink_through_start_write_flush_stop() -> None:
    """Every sink is started, written, flushed and stopped in that order, the required ones first at each step."""
    log: list[str] = []
    http = Recording("http", log, required=False)
    kafka = Recording("kafka", log)
    sinks = SinkSet([http, kafka])
    await sinks.start()
    await sinks.write([_alert()])
    await sinks.flush()
    await sinks.stop()
    assert log == [
        "kafka.start",
        "http.start",
        "kafka.write",
        "http.write",
        "kafka.flush",
        "http.flush",
        "kafka.stop",
        "http.stop",
    ]


async def test_a_failing_optional_sink_does_not_stop_the_required_one() -> None:
    """An optional sink that raises on every write is logged; the required sink gets every alert."""
    log: list[str] = []
    kafka = Recording("kafka", log)
    http = Recording("http", log, required=False, fail=ConnectionError("receiver down"))
    sinks = SinkSet([http, kafka])
    for n in range(3):
        await sinks.write([_alert(n)])
    assert kafka.written == [_alert(n).id for n in range(3)]


async def test_an_alert_the_required_sink_cannot_deliver_is_not_given_to_the_optional_one() -> None:
    """Undeliverable from the required sink reaches the caller, and the optional sink never sees that alert."""
    log: list[str] = []
    kafka = Recording("kafka", log, fail=Undeliverable("alerts"))
    http = Recording("http", log, required=False)
    with pytest.raises(Undeliverable):
        await SinkSet([kafka, http]).write([_alert()])
    assert http.written == []


def test_a_tenant_alert_has_no_key_labels_in_alertmanager() -> None:
    """A tenant alert (no key) is posted without key_id and env labels: no label says "None"."""
    labels = to_postable(_alert(key_id=None))["labels"]
    assert "key_id" not in labels
    assert "env" not in labels
    assert labels["tenant"] == "acme"
    assert "None" not in labels.values()
    key_labels = to_postable(_alert())["labels"]
    assert (key_labels["key_id"], key_labels["env"]) == ("k1", "live")
