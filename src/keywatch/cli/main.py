"""`keywatch` console entry point: one click group, one module per subcommand family."""

from __future__ import annotations

import importlib

import click

from keywatch import __version__
from keywatch.cli.options import CONTEXT_SETTINGS

# Subcommand modules, each exposing a click command or group named `command`.
_SUBCOMMANDS = {
    "worker": "keywatch.cli.worker",
    "tail": "keywatch.cli.tail",
    "schemas": "keywatch.cli.schemas",
    "replay": "keywatch.cli.replay",
    "simulate": "keywatch.cli.simulate",
    "evaluate": "keywatch.cli.evaluate",
}


# One line each for `keywatch -h` (listing commands imports none of them).
_SHORT_HELP = {
    "worker": "Run the worker: consume requests and lifecycle events, emit alerts and dead letters.",
    "tail": "Follow the alert topic: one line per alert, coloured by severity (or JSON).",
    "schemas": "Write or check the JSON Schemas of the records and alerts.",
    "replay": "Run request and lifecycle files through the detectors offline; write the alerts.",
    "simulate": "Generate labelled API traffic and key lifecycle events (files or Kafka).",
    "evaluate": "Score alerts against a scenario's labels: precision, recall, time to detect.",
}


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs, so `keywatch tail` does not load faust."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, _SHORT_HELP[name]) for name in self.list_commands(ctx)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _SUBCOMMANDS.get(cmd_name)
        if module_name is None:
            return None
        command = importlib.import_module(module_name).command
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="keywatch")
def cli() -> None:
    """keywatch: audit and anomaly detection for API keys, fed from Kafka.

    \b
    Examples:
      keywatch worker                       run the worker (KEYWATCH_* settings)
      keywatch tail --min-severity high     follow the alerts
      keywatch simulate --out-dir sim       make a labelled scenario
      keywatch replay --requests sim/requests.jsonl --lifecycle sim/lifecycle.jsonl --out alerts.jsonl
      keywatch evaluate --labels sim/labels.jsonl --alerts alerts.jsonl
    """


def main() -> None:
    """Console script entry point."""
    cli()


if __name__ == "__main__":
    main()
