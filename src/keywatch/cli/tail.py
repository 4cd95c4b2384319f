"""`keywatch tail`: follow the alert topic and print alerts for a human (or JSON for machines)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson

from keywatch.cli.options import CONTEXT_SETTINGS
from keywatch.config import ConfigError, load_settings, unknown_variables
from keywatch.contract.alerts import SEVERITY_ORDER
from keywatch.security import aiokafka_kwargs

COLOURS = {"info": "bright_black", "low": "cyan", "medium": "yellow", "high": "red", "critical": "magenta"}


def format_alert(alert: dict[str, Any], colour: bool) -> str:
    """One readable line: time, severity, type, subject, summary."""
    data = alert.get("data") or {}
    severity = str(data.get("severity", "?"))
    status = " RESOLVED" if data.get("status") == "resolved" else ""
    line = (
        f"{alert.get('time', '?')}  {severity.upper():<8} {alert.get('type', '?')!s:<24} "
        f"{alert.get('subject', '?')}{status}  {data.get('summary', '')}  [id {alert.get('id', '?')}]"
    )
    return click.style(line, fg=COLOURS.get(severity), bold=severity in ("high", "critical")) if colour else line


_TEXT_FIELDS = ("id", "type", "time", "subject", "source")


def read_alert(raw: bytes | None) -> dict[str, Any] | str | None:
    """An alert record as a dict; None for a tombstone (nothing to show); else why it is not a readable alert.

    The alert topic may hold anything a producer put there: tail shows what it can and never stops on the rest.
    """
    if raw is None:
        return None
    try:
        alert = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at position {exc.pos}, {len(raw)} bytes)"
    if not isinstance(alert, dict):
        return f"a JSON {type(alert).__name__}, not an object"
    for name in _TEXT_FIELDS:
        if name in alert and not isinstance(alert[name], str):
            return f"`{name}` is a {type(alert[name]).__name__}, not a string"
    data = alert.get("data")
    if data is not None and not isinstance(data, dict):
        return f"`data` is a {type(data).__name__}, not an object"
    if "type" not in alert and "data" not in alert:
        return "neither `type` nor `data`: not an alert"
    return alert


@dataclass
class Skipped:
    """Records tail could not read, for the closing count."""

    count: int = 0


def matches(alert: dict[str, Any], tenants: tuple[str, ...], types: tuple[str, ...], min_severity: str) -> bool:
    """Whether an alert passes the tenant, type and minimum-severity filters."""
    data = alert.get("data") or {}
    if tenants and data.get("tenant") not in tenants:
        return False
    if types and alert.get("type") not in types:
        return False
    return SEVERITY_ORDER.get(str(data.get("severity")), -1) >= SEVERITY_ORDER[min_severity]


async def _wait_for_topic(
    bootstrap: list[str], topic: str, idle_exit: float | None, security: dict[str, Any] | None
) -> bool:
    """Wait until `topic` exists (True), or `idle_exit` seconds passed (False). Subscribing to a missing topic
    would create it with the broker's defaults (one partition) on a broker that auto-creates topics, before the
    worker creates it with its own partition count; `existing_topics` never does."""
    from aiokafka.admin import AIOKafkaAdminClient

    from keywatch.kafka_admin import existing_topics

    loop = asyncio.get_running_loop()
    started = loop.time()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(security or {}))
    try:
        await admin.start()
        said = False
        while topic not in await existing_topics(admin):
            if not said:
                click.echo(f"waiting for topic {topic} to exist (the worker creates it)", err=True)
                said = True
            if idle_exit is not None and loop.time() - started > idle_exit:
                return False
            await asyncio.sleep(1.0)
        return True
    finally:
        await admin.close()


async def _follow(
    bootstrap: list[str],
    topic: str,
    from_beginning: bool,
    emit: Any,
    limit: int | None,
    idle_exit: float | None,
    security: dict[str, Any] | None = None,
) -> int:
    from aiokafka import AIOKafkaConsumer

    if not await _wait_for_topic(bootstrap, topic, idle_exit, security):
        return 0
    # No consumer group: tail never takes partitions away from anyone and never commits; it reads them all.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **(security or {}),
    )
    shown = 0
    try:
        await consumer.start()
        idle_since = asyncio.get_running_loop().time()
        while limit is None or shown < limit:
            batch = await consumer.getmany(timeout_ms=500)
            now = asyncio.get_running_loop().time()
            if not batch and idle_exit is not None and now - idle_since > idle_exit:
                break
            for messages in batch.values():
                idle_since = now
                for message in messages:
                    if emit(message.value, f"{message.topic}[{message.partition}]@{message.offset}"):
                        shown += 1
                        if limit is not None and shown >= limit:
                            break
    finally:
        await consumer.stop()
    return shown


@contextlib.contextmanager
def _kafka_errors(bootstrap: str) -> Iterator[None]:
    """Kafka failures as one line naming the broker and what to do, not a traceback."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    try:
        yield
    except KafkaConnectionError:
        raise click.ClickException(
            f"cannot connect to Kafka at {bootstrap}: is the broker running? "
            "(set --bootstrap-servers or KEYWATCH_BOOTSTRAP_SERVERS)"
        ) from None
    except KafkaError as exc:
        raise click.ClickException(f"Kafka at {bootstrap}: {exc}") from None


@click.command("tail", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="TOML file ([worker] table): bootstrap servers, topics, TLS and SASL settings.",
)
@click.option("--bootstrap-servers", metavar="HOST:PORT[,...]", help="Overrides KEYWATCH_BOOTSTRAP_SERVERS.")
@click.option("--topic", help="Alert topic (default: KEYWATCH_TOPIC_ALERTS).")
@click.option("--tenant", "tenants", multiple=True, help="Only this tenant (repeatable).")
@click.option("--type", "types", multiple=True, help="Only this alert type, e.g. apiKey.revoked (repeatable).")
@click.option(
    "--min-severity",
    type=click.Choice(list(SEVERITY_ORDER)),
    default="info",
    show_default=True,
    help="Hide alerts below this severity.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each alert as one JSON line.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest alert instead of new ones only.")
@click.option("--max", "limit", type=click.IntRange(min=1), help="Exit after printing this many alerts.")
@click.option(
    "--idle-exit",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Exit after this many seconds without new alerts.",
)
@click.option("--color/--no-color", default=None, help="Colour by severity (default: when stdout is a terminal).")
def command(
    config_file: Path | None,
    bootstrap_servers: str | None,
    topic: str | None,
    tenants: tuple[str, ...],
    types: tuple[str, ...],
    min_severity: str,
    as_json: bool,
    from_beginning: bool,
    limit: int | None,
    idle_exit: float | None,
    color: bool | None,
) -> None:
    """Follow keywatch alerts: one line each, coloured by severity.

    \b
    Examples:
      keywatch tail --min-severity high
      keywatch tail --from-beginning --json --max 100 | jq .data.summary
      keywatch tail --tenant acme --type apiKey.usedAfterRevoke
    """
    try:
        settings = load_settings(config_file, **({"bootstrap_servers": bootstrap_servers} if bootstrap_servers else {}))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for line in unknown_variables():
        click.echo(f"warning: {line}", err=True)
    # aiokafka logs each failed connection attempt; the one line tail prints on failure says it all
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    colour = sys.stdout.isatty() if color is None else color

    skipped = Skipped()

    def emit(raw: bytes | None, where: str) -> bool:
        alert = read_alert(raw)
        if alert is None:
            return False
        if isinstance(alert, str):
            skipped.count += 1
            click.echo(f"skipped the record at {where}: {alert}", err=True)
            return False
        if not matches(alert, tenants, types, min_severity):
            return False
        if as_json:
            click.echo(orjson.dumps(alert).decode())
        else:
            click.echo(format_alert(alert, colour), color=colour)
        return True

    since = "from the beginning" if from_beginning else f"since {datetime.now().astimezone():%Y-%m-%dT%H:%M:%S%z}"
    if not as_json:
        click.echo(f"following {topic or settings.topic_alerts} on {settings.bootstrap_servers} {since}", err=True)
    with contextlib.suppress(KeyboardInterrupt), _kafka_errors(settings.bootstrap_servers):
        asyncio.run(
            _follow(
                settings.bootstrap_list,
                topic or settings.topic_alerts,
                from_beginning,
                emit,
                limit,
                idle_exit,
                aiokafka_kwargs(settings),
            )
        )
    if skipped.count:
        click.echo(f"skipped {skipped.count} record(s) that are not keywatch alerts", err=True)
