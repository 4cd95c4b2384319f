"""`keywatch replay`: the detectors over JSONL files, offline, for backtesting thresholds."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import IO

import click

from keywatch.config import ConfigError, load_settings
from keywatch.contract.alerts import Alert
from keywatch.replay import ReplaySummary, replay, replay_parallel
from keywatch.runtime import make_engine

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("replay")
@click.option("--requests", "requests_file", type=_FILE, help="Request log records, JSONL.")
@click.option("--lifecycle", "lifecycle_file", type=_FILE, help="Lifecycle events, JSONL.")
@click.option("--geoip-asn", type=_FILE, help="GeoLite2-ASN .mmdb file.")
@click.option("--geoip-country", type=_FILE, help="GeoLite2-Country or -City .mmdb file.")
@click.option("--config", "config_file", type=_FILE, help="TOML file; thresholds in [detection].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Alerts JSONL (default stdout).")
@click.option("--quiet", is_flag=True, help="No progress on stderr (the summary is still printed).")
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Processes, each replaying a shard of the tenants (same alerts; output sorted by time, no progress).",
)
def command(
    requests_file: Path | None,
    lifecycle_file: Path | None,
    geoip_asn: Path | None,
    geoip_country: Path | None,
    config_file: Path | None,
    out: Path | None,
    quiet: bool,
    jobs: int,
) -> None:
    """Replay request and lifecycle JSONL files through the detectors; write alerts as JSONL CloudEvents.

    Input is merged in event-time order. A malformed line is counted and reported, never fatal.
    """
    if requests_file is None and lifecycle_file is None:
        raise click.UsageError("give --requests, --lifecycle or both")
    try:
        settings = load_settings(config_file)
        engine = make_engine(settings, config_file, asn_db=geoip_asn, country_db=geoip_country)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None

    if jobs > 1:
        if not quiet:
            click.echo(f"replaying in {jobs} processes, one shard of the tenants each ...", err=True)
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(out.open("w")) if out else sys.stdout
            summary = replay_parallel(
                requests_file,
                lifecycle_file,
                lambda: make_engine(settings, config_file, asn_db=geoip_asn, country_db=geoip_country),
                sink,
                jobs,
            )
        for line in summary.lines():
            click.echo(line, err=True)
        return

    def show(summary: ReplaySummary) -> None:
        rate = summary.records / summary.seconds if summary.seconds else 0
        click.echo(
            f"\r{summary.records:,} records, {summary.keys:,} keys, {sum(summary.alerts.values()):,} alerts, "
            f"{rate:,.0f}/s",
            err=True,
            nl=False,
        )

    with contextlib.ExitStack() as stack:
        requests: IO[bytes] | list[bytes] = stack.enter_context(requests_file.open("rb")) if requests_file else []
        lifecycle: IO[bytes] | list[bytes] = stack.enter_context(lifecycle_file.open("rb")) if lifecycle_file else []
        sink = stack.enter_context(out.open("w")) if out else sys.stdout

        def emit(alert: Alert) -> None:
            sink.write(alert.model_dump_json())
            sink.write("\n")

        summary = replay(
            requests,
            lifecycle,
            engine,
            emit,
            progress=None if quiet else show,
            labels=(str(requests_file), str(lifecycle_file)),
        )
    if not quiet:
        click.echo("", err=True)
    for line in summary.lines():
        click.echo(line, err=True)
