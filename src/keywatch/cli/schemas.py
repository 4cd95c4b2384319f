"""`keywatch schemas`: write or check the JSON Schemas of the contract."""

from __future__ import annotations

from pathlib import Path

import click

from keywatch.contract.schemas import drifted, write_all


@click.command("schemas")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("schemas"), show_default=True)
@click.option("--check", is_flag=True, help="Exit 1 if the files differ from the models instead of writing.")
def command(directory: Path, check: bool) -> None:
    """Generate the JSON Schemas of requests, lifecycle events, alerts and dead letters."""
    if check:
        stale = drifted(directory)
        if stale:
            raise click.ClickException(
                f"schemas out of date: {', '.join(stale)} (run `keywatch schemas --dir {directory}`)"
            )
        click.echo(f"schemas in {directory} match the models")
        return
    for path in write_all(directory):
        click.echo(f"wrote {path}")
