"""`keywatch replay`: the detectors over JSONL files, offline, for backtesting thresholds."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import IO

import click

from keywatch.cli.options import CONTEXT_SETTINGS
from keywatch.cli.progress import Progress
from keywatch.config import ConfigError, load_settings
from keywatch.contract.alerts import Alert
from keywatch.eventsort import DEFAULT_SORT_BUFFER
from keywatch.inputs import STDIN, InputError, check_sources, describe, read_lines
from keywatch.memory import tune_gc
from keywatch.replay import Input, ReplaySummary, replay_inputs, replay_parallel
from keywatch.runtime import make_engine

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


_INPUT = click.Path(dir_okay=False, allow_dash=True)


def _open_out(path: Path) -> IO[str]:
    """The alerts file, opened for writing; one line naming it and why when it cannot be."""
    try:
        return path.open("w")
    except OSError as exc:
        raise click.ClickException(f"cannot write the alerts to {path}: {exc.strerror or exc}") from None


def _check_inputs(option: str, sources: tuple[str, ...]) -> None:
    for source in sources:
        try:
            check_sources([source])
        except InputError as exc:
            raise click.BadParameter(str(exc), param_hint=option) from None


@click.command("replay", context_settings=CONTEXT_SETTINGS)
@click.option("--requests", "requests_files", type=_INPUT, multiple=True, metavar="FILE",
              help="Request log records, JSONL; gzip or plain; '-' for stdin. Repeat for several files.")  # fmt: skip
@click.option("--lifecycle", "lifecycle_files", type=_INPUT, multiple=True, metavar="FILE",
              help="Lifecycle events, JSONL; gzip or plain; '-' for stdin. Repeat for several files.")  # fmt: skip
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
    help="Processes, each replaying a shard of the tenants (same alerts; output sorted by time, no progress; "
    "no stdin).",
)
@click.option(
    "--sort-buffer",
    type=click.IntRange(min=1),
    default=DEFAULT_SORT_BUFFER,
    show_default=True,
    metavar="N",
    help="Records sorted in memory at once (per process); longer input is sorted in runs of N records in "
    "temporary files, then merged.",
)
def command(
    requests_files: tuple[str, ...],
    lifecycle_files: tuple[str, ...],
    geoip_asn: Path | None,
    geoip_country: Path | None,
    config_file: Path | None,
    out: Path | None,
    quiet: bool,
    jobs: int,
    sort_buffer: int,
) -> None:
    """Replay request and lifecycle JSONL files through the detectors; write alerts as JSONL CloudEvents.

    The input may be in any order and split over several files: every record is sorted by event time first
    (ties in an order fixed by the record's content), so the same records give the same alerts however they
    are ordered or split. Memory holds at most --sort-buffer records; a malformed line is counted and reported,
    never fatal.

    \b
    Example:
      zcat gw-a.jsonl.gz | keywatch replay --requests - --requests gw-b.jsonl.gz \\
          --lifecycle lifecycle.jsonl --out alerts.jsonl
    """
    if not requests_files and not lifecycle_files:
        raise click.UsageError("give --requests, --lifecycle or both")
    _check_inputs("--requests", requests_files)
    _check_inputs("--lifecycle", lifecycle_files)
    if sum(s == STDIN for s in (*requests_files, *lifecycle_files)) > 1:
        raise click.UsageError("stdin (-) can be given as at most one input")
    if jobs > 1 and STDIN in (*requests_files, *lifecycle_files):
        raise click.UsageError("--jobs > 1 reads every input once per process: stdin (-) cannot be an input")
    try:
        settings = load_settings(config_file)
        engine = make_engine(settings, config_file, asn_db=geoip_asn, country_db=geoip_country)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    tune_gc()  # (replay holds every key's state decoded: the collector's defaults would walk them all, often)

    if jobs > 1:
        if not quiet:
            click.echo(f"replay: {jobs} processes, one shard of the tenants each ...", err=True)
        finished: list[int] = []

        def shard_done(shard: int, part: ReplaySummary) -> None:
            finished.append(shard)
            if not quiet:
                click.echo(
                    f"replay: shard {shard + 1} done ({len(finished)} of {jobs}): {part.records:,} records, "
                    f"{sum(part.alerts.values()):,} alerts in {part.seconds:.1f}s",
                    err=True,
                )

        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(_open_out(out)) if out else sys.stdout
            try:
                summary = replay_parallel(
                    requests_files,
                    lifecycle_files,
                    lambda: make_engine(settings, config_file, asn_db=geoip_asn, country_db=geoip_country),
                    sink,
                    jobs,
                    sort_buffer,
                    on_shard=shard_done,
                )
            except InputError as exc:
                raise click.ClickException(str(exc)) from None
        for line in summary.lines():
            click.echo(line, err=True)
        return

    bar: list[Progress] = []  # made at the first report, once the sorted input's size is known

    def show(summary: ReplaySummary) -> None:
        if not bar:
            bar.append(Progress("replay", summary.expected or None, "records", already_s=summary.seconds))
        bar[0].update(summary.records)

    inputs = [Input.requests(describe(s), read_lines(s)) for s in requests_files]
    inputs += [Input.lifecycle(describe(s), read_lines(s)) for s in lifecycle_files]
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(_open_out(out)) if out else sys.stdout

        def emit(alert: Alert) -> None:
            sink.write(alert.model_dump_json())
            sink.write("\n")

        try:
            summary = replay_inputs(inputs, engine, emit, progress=None if quiet else show, sort_buffer=sort_buffer)
        except InputError as exc:
            raise click.ClickException(str(exc)) from None
    if bar:
        bar[0].close(f"{summary.records:,} records, {sum(summary.alerts.values()):,} alerts")
    for line in summary.lines():
        click.echo(line, err=True)
