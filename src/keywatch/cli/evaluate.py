"""`keywatch evaluate`: score an alerts file against the simulator's labels."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from keywatch.cli.options import CONTEXT_SETTINGS
from keywatch.sim.evaluate import (
    DEFAULT_TOLERANCE_S,
    NOISY_PER_DAY,
    AlertFileError,
    check_thresholds,
    evaluate,
    noisy_days,
    read_alerts,
    render_noisy,
    render_table,
    sniff,
)
from keywatch.sim.labels import LabelFileError, read_labels


@click.command(context_settings=CONTEXT_SETTINGS)
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
    Also counted: keys with more than 3 alerts of one type in a UTC day that no label explains.
    Each file is checked first: a file of the wrong kind (e.g. lifecycle.jsonl as --alerts) is named in one line.

    \b
    Example:
      keywatch evaluate --alerts alerts.jsonl --labels sim/labels.jsonl --min-recall 0.9
    """
    _check_kind("--alerts", alerts_path, "alerts", "the alerts JSONL of `keywatch replay --out` or the alert topic")
    _check_kind("--labels", labels_path, "labels", "labels.jsonl from `keywatch simulate --out-dir`")
    try:
        alerts = read_alerts(alerts_path)
        labels = read_labels(labels_path)
    except (AlertFileError, LabelFileError) as exc:
        raise click.ClickException(str(exc)) from None
    scores = evaluate(alerts, labels, tolerance)
    noisy = noisy_days(alerts, labels, tolerance_s=tolerance)
    failures = check_thresholds(scores, min_precision, min_recall)
    if as_json:
        out = {
            "tolerance_seconds": tolerance,
            "types": [s.as_dict(show_fp) for s in scores.values()],
            "noisy_key_days": {
                "limit_per_day": NOISY_PER_DAY,
                "count": len(noisy),
                "groups": [d.as_dict() for d in noisy[:show_fp]],
            },
            "failures": failures,
        }
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        click.echo(render_table(scores, show_fp))
        click.echo("")
        click.echo(render_noisy(noisy, show_fp))
    if failures:
        for failure in failures:
            click.echo(f"evaluate: below the floor: {failure}", err=True)
        sys.exit(1)


def _check_kind(option: str, path: Path, want: str, hint: str) -> None:
    """One line, exit 1, when the file given for `option` is not what it should hold."""
    found = sniff(path)
    if found.kind == want:
        return
    if found.kind == "empty":
        raise click.ClickException(f"{option} {path}: the file is empty; give {hint}")
    where = f"{path}:{found.line}"
    raise click.ClickException(f"{option} {where}: looks like {found.describe()}, not {want}; give {hint}")
