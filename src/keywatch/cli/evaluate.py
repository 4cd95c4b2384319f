"""`keywatch evaluate`: score an alerts file against the simulator's labels."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from keywatch.sim.evaluate import (
    DEFAULT_TOLERANCE_S,
    AlertFileError,
    check_thresholds,
    evaluate,
    read_alerts,
    render_table,
)
from keywatch.sim.labels import LabelFileError, read_labels


@click.command()
@click.option("--alerts", "alerts_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Alerts JSONL (one CloudEvent per line).")  # fmt: skip
@click.option("--labels", "labels_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="labels.jsonl from `keywatch simulate`.")  # fmt: skip
@click.option("--tolerance", type=click.FloatRange(min=0), default=DEFAULT_TOLERANCE_S, show_default=True,
              help="Seconds an alert may fall before a label's start or after its end.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable results instead of the table.")
@click.option("--show-fp", type=click.IntRange(min=0), default=10, show_default=True,
              help="List at most N false positives.")  # fmt: skip
@click.option("--min-precision", type=click.FloatRange(0, 1), default=None, help="Exit 1 if a type is below.")
@click.option("--min-recall", type=click.FloatRange(0, 1), default=None, help="Exit 1 if a type is below.")
def command(
    alerts_path: Path,
    labels_path: Path,
    tolerance: float,
    as_json: bool,
    show_fp: int,
    min_precision: float | None,
    min_recall: float | None,
) -> None:
    """Precision, recall and median time-to-detect per alert type (new IP, 4xx cluster, spike, after revoke).

    An alert is a true positive when a label of the same type, tenant and key has
    start - tolerance <= alert time <= end + tolerance. Lifecycle alerts and resolved episode ends are ignored.
    """
    try:
        alerts = read_alerts(alerts_path)
        labels = read_labels(labels_path)
    except (AlertFileError, LabelFileError) as exc:
        raise click.ClickException(str(exc)) from None
    scores = evaluate(alerts, labels, tolerance)
    failures = check_thresholds(scores, min_precision, min_recall)
    if as_json:
        out = {
            "tolerance_seconds": tolerance,
            "types": [s.as_dict(show_fp) for s in scores.values()],
            "failures": failures,
        }
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        click.echo(render_table(scores, show_fp))
    if failures:
        for failure in failures:
            click.echo(f"evaluate: below the floor: {failure}", err=True)
        sys.exit(1)
