"""`keywatch` console entry point: one click group, one module per subcommand family."""

from __future__ import annotations

import importlib

import click

from keywatch import __version__

# Subcommand modules, each exposing a click command or group named `command`.
_SUBCOMMANDS = {
    "worker": "keywatch.cli.worker",
    "tail": "keywatch.cli.tail",
    "schemas": "keywatch.cli.schemas",
    "replay": "keywatch.cli.replay",
    "simulate": "keywatch.cli.simulate",
    "evaluate": "keywatch.cli.evaluate",
}


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs, so `keywatch tail` does not load faust."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _SUBCOMMANDS.get(cmd_name)
        if module_name is None:
            return None
        command = importlib.import_module(module_name).command
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="keywatch")
def cli() -> None:
    """keywatch: audit and anomaly detection for API keys, fed from Kafka."""


def main() -> None:
    """Console script entry point."""
    cli()


if __name__ == "__main__":
    main()
