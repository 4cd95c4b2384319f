"""`keywatch worker`: run the stream processor."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from keywatch.config import ConfigError, Settings, load_settings


def _build(settings: Settings, config_file: Path | None):  # type: ignore[no-untyped-def]
    from keywatch.runtime import make_engine
    from keywatch.stream.app import create_app

    return create_app(settings, make_engine(settings, config_file))


@click.command("worker")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file ([worker] table).")
@click.option("--bootstrap-servers", help="Overrides KEYWATCH_BOOTSTRAP_SERVERS.")
@click.option("--broker-timeout", default=120.0, show_default=True, help="Seconds to wait for Kafka at start.")
def command(config_file: Path | None, bootstrap_servers: str | None, broker_timeout: float) -> None:
    """Run the keywatch worker: consume requests and lifecycle events, emit alerts and dead letters."""
    overrides = {"bootstrap_servers": bootstrap_servers} if bootstrap_servers else {}
    try:
        settings = load_settings(config_file, **overrides)
        app = _build(settings, config_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from keywatch.kafka_admin import ensure_topics, wait_for_broker

    async def prepare() -> None:
        await wait_for_broker(settings.bootstrap_list, deadline_s=broker_timeout)
        await ensure_topics(
            settings.bootstrap_list,
            [settings.topic_requests, settings.topic_lifecycle, settings.topic_alerts, settings.topic_dlq],
            settings.partitions,
        )

    try:
        asyncio.run(prepare())
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    import faust

    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
