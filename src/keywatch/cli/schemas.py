"""`keywatch schemas`: write or check the JSON Schemas of the contract."""

from __future__ import annotations

from pathlib import Path

import click

from keywatch.cli.options import CONTEXT_SETTINGS
from keywatch.contract.schemas import drifted, write_all
from keywatch.core import catalog


@click.command("schemas", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("schemas"),
    show_default=True,
    help="Directory of the schema files (written, or compared with --check).",
)
@click.option("--check", is_flag=True, help="Exit 1 if the files are missing or differ from the models; write nothing.")
def command(directory: Path, check: bool) -> None:
    """Generate the JSON Schemas of requests, lifecycle events, alerts and dead letters.

    \b
    Examples:
      keywatch schemas                 write schemas/*.schema.json
      keywatch schemas --check         in CI: fail when the committed schemas drifted
    """
    if check:
        if not directory.is_dir():
            raise click.ClickException(
                f"schemas missing: {directory} is not a directory (run `keywatch schemas --dir {directory}`)"
            )
        stale = drifted(directory, catalog.alert_types())
        missing = [name for name in stale if not (directory / name).exists()]
        changed = [name for name in stale if name not in missing]
        problems = ([f"missing: {', '.join(missing)}"] if missing else []) + (
            [f"out of date: {', '.join(changed)}"] if changed else []
        )
        if problems:
            raise click.ClickException(
                f"schemas in {directory} {'; '.join(problems)} (run `keywatch schemas --dir {directory}`)"
            )
        click.echo(f"schemas in {directory} match the models")
        return
    try:
        written = write_all(directory, catalog.alert_types())
    except OSError as exc:
        raise click.ClickException(f"cannot write the schemas to {directory}: {exc.strerror or exc}") from None
    for path in written:
        click.echo(f"wrote {path}")
