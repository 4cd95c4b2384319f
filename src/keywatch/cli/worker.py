"""`keywatch worker`: run the stream processor.

Start-up order: the HTTP endpoints first (so /healthz answers and /readyz says why the worker is not ready),
then wait for Kafka with backoff (failing fast when the broker rejects our credentials or certificate), then
check the replication factor against the cluster, create keywatch's own missing topics (output and
internal, never the inputs), check that the DLQ and keyed topics take the largest messages keywatch sends
them, then wait for the input topics to exist (or exit, KEYWATCH_MISSING_INPUT_TOPICS=exit), then hand the
same event loop to faust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

import click

from keywatch.cli.options import CONTEXT_SETTINGS
from keywatch.config import ConfigError, Settings, load_settings, unknown_variables

log = logging.getLogger("keywatch.worker")


class MetricsPortError(Exception):
    """The HTTP endpoints cannot listen on the configured address."""


def _build(settings: Settings, config_file: Path | None):  # type: ignore[no-untyped-def]
    from keywatch.runtime import make_engine
    from keywatch.stream.app import create_app

    return create_app(settings, make_engine(settings, config_file))


@click.command("worker", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="TOML file: [worker] settings and [detection] rules (default: $KEYWATCH_CONFIG).",
)
@click.option("--bootstrap-servers", metavar="HOST:PORT[,...]", help="Overrides KEYWATCH_BOOTSTRAP_SERVERS.")
@click.option(
    "--broker-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds to wait for Kafka at start before giving up.",
)
def command(config_file: Path | None, bootstrap_servers: str | None, broker_timeout: float) -> None:
    """Run the keywatch worker: consume requests and lifecycle events, emit alerts and dead letters.

    Every setting is a KEYWATCH_* environment variable (README "Configuration"), over the TOML file.

    \b
    Examples:
      keywatch worker --bootstrap-servers 127.0.0.1:19092
      KEYWATCH_LOG_FORMAT=json keywatch worker --config /etc/keywatch/config.toml
    """
    overrides = {"bootstrap_servers": bootstrap_servers} if bootstrap_servers else {}
    from keywatch import logs

    try:
        settings = load_settings(config_file, **overrides)
        logs.setup(settings.log_level, settings.log_format)  # before the app is built: its warnings look alike
        for line in unknown_variables():
            log.warning("%s", line)
        app = _build(settings, config_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    from keywatch.memory import tune_gc

    tune_gc()
    # aiokafka's DEBUG lines dump whole fetch responses: raw input records, before redaction. Never below INFO.
    for name in ("aiokafka.conn", "aiokafka.consumer.fetcher", "aiokafka.producer"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
    from keywatch.http import serve
    from keywatch.kafka_admin import (
        BrokerAuthError,
        ReplicationError,
        TopicLimitError,
        check_message_limits,
        check_replication,
        ensure_topics,
        input_topics,
        wait_for_broker,
        wait_for_input_topics,
    )
    from keywatch.security import aiokafka_kwargs, describe
    from keywatch.stream.delivery import required_message_bytes
    from keywatch.stream.kafka_internals import faust_internal_topics

    security = aiokafka_kwargs(settings)
    log.info("connecting to Kafka at %s (%s)", settings.bootstrap_servers, describe(settings))

    async def prepare() -> None:
        if settings.metrics_port:
            try:
                app.keywatch_http = await serve(
                    app.keywatch_metrics,
                    app.keywatch_readiness,
                    settings.metrics_host,
                    settings.metrics_port,
                    app.keywatch_readiness_details,
                    app.keywatch_liveness,
                )
            except OSError as exc:
                raise MetricsPortError(
                    f"cannot serve /metrics, /healthz and /readyz on {settings.metrics_host}:{settings.metrics_port}: "
                    f"{exc.strerror or exc} (another process has the port? set KEYWATCH_METRICS_PORT to a free port, "
                    "or 0 to turn the endpoints off)"
                ) from None
        await wait_for_broker(
            settings.bootstrap_list,
            deadline_s=broker_timeout,
            security=security,
            on_attempt=app.keywatch_health.set_reachable,
        )
        own = [
            settings.topic_alerts,
            settings.topic_dlq,
            app.keywatch_ingest.keyed_topic,  # faust's group leader must see it at its first assignment
        ]
        internal = faust_internal_topics(app)
        await check_replication(
            settings.bootstrap_list,
            [*input_topics(settings), *own, *internal],
            settings.replication_factor,
            creates=[*own, *internal],
            security=security,
        )
        # Before anything is created: a misspelled input topic (or app id) leaves no topics behind to clean up.
        await wait_for_input_topics(
            settings.bootstrap_list,
            input_topics(settings),
            exit_if_missing=settings.missing_input_topics == "exit",
            security=security,
            on_check=app.keywatch_health.set_missing_topics,
        )
        await ensure_topics(
            settings.bootstrap_list,
            own,
            settings.partitions,
            settings.replication_factor,
            security=security,
        )
        needs = required_message_bytes(app.keywatch_ingest.keyed_topic, settings.topic_dlq)
        await check_message_limits(settings.bootstrap_list, needs, security=security)

    # One loop for the wait and for faust: the HTTP server started here keeps serving once faust runs.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(prepare())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    failure: BaseException | None = None
    try:
        loop.run_until_complete(task)
    except (asyncio.CancelledError, ConnectionError, ReplicationError, TopicLimitError, MetricsPortError) as exc:
        failure = exc
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if failure is not None:
        _close_http(loop, app)
        loop.close()
        if isinstance(failure, asyncio.CancelledError):
            log.info("stopped while waiting for Kafka")
            return
        if isinstance(failure, BrokerAuthError):
            raise click.ClickException(f"cannot connect to Kafka: {failure}") from None
        raise click.ClickException(str(failure)) from None
    import faust

    worker = faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        loop=loop,
        logging_config=logs.faust_logging_config(settings.log_level, settings.log_format),
    )
    worker.execute_from_commandline()


def _close_http(loop: asyncio.AbstractEventLoop, app: Any) -> None:
    runner = getattr(app, "keywatch_http", None)
    if runner is not None and not loop.is_closed():
        with contextlib.suppress(Exception):
            loop.run_until_complete(runner.cleanup())
