"""Detection quality does not regress: a labelled simulated scenario, replayed, scores >= 0.95 per type."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from keywatch.cli.main import cli
from keywatch.config import Settings
from keywatch.replay import replay
from keywatch.runtime import make_engine
from keywatch.sim.evaluate import evaluate, read_alerts
from keywatch.sim.labels import read_labels

# Smaller than the README's default scenario (seed 7, 3.8 M requests) so CI spends about a minute on it.
SCENARIO = ["--seed", "5", "--tenants", "12", "--keys", "120", "--scale", "0.4", "--incidents-per-type", "8"]
SCORED = ("apiKey.usedFromNewIp", "apiKey.4xxCluster", "apiKey.requestSpike", "apiKey.usedAfterRevoke")


def test_precision_recall_and_time_to_detect(tmp_path: Path) -> None:
    """Each alert type has precision and recall >= 0.95 and a median time-to-detect under 2 minutes."""
    result = CliRunner().invoke(cli, ["simulate", "--out-dir", str(tmp_path), *SCENARIO])
    assert result.exit_code == 0, result.output
    alerts_file = tmp_path / "alerts.jsonl"
    with (
        (tmp_path / "requests.jsonl").open("rb") as requests,
        (tmp_path / "lifecycle.jsonl").open("rb") as life,
        alerts_file.open("w") as out,
    ):
        replay(requests, life, make_engine(Settings()), lambda a: out.write(a.model_dump_json() + "\n"))
    scores = evaluate(read_alerts(alerts_file), read_labels(tmp_path / "labels.jsonl"))
    for alert_type in SCORED:
        score = scores[alert_type]
        assert score.labels >= 8, alert_type
        assert score.precision is not None
        assert score.precision >= 0.95, score.as_dict(show_fp=5)
        assert score.recall is not None
        assert score.recall >= 0.95, score.as_dict(show_fp=5)
        assert score.median_ttd is not None
        assert score.median_ttd < 120, score.as_dict(show_fp=0)
