"""The chaos soak of scripts/reliability-report, in its smoke size, on the real broker: so the script cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.integration.kafka_helpers import ROOT


def test_chaos_smoke_run_matches_replay(kafka_bootstrap: str) -> None:
    """`reliability-report --chaos --smoke`: one worker of two killed and restarted, the alert ids equal replay's."""
    env = {**os.environ, "KEYWATCH_TEST_BOOTSTRAP": kafka_bootstrap}
    soak = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "reliability-report"), "--chaos", "--smoke"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = soak.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        soak.terminate()  # SIGTERM: the script stops its workers on the way out
        stdout, stderr = soak.communicate(timeout=60)
    assert soak.returncode == 0, f"{stdout[-3000:]}\n{stderr[-3000:]}"
    (report,) = json.loads(stdout.strip().splitlines()[-1])["chaos"]
    assert report["store"] == "memory"
    assert report["kills"] == 1
    assert report["kill_log"][0]["at_seconds"] <= report["flow_seconds"], "the kill came while the input flowed"
    assert report["alerts_expected"] > 0
    assert (report["missing"], report["extra"]) == (0, 0)
    assert report["alerts_emitted"] == report["alerts_expected"] + report["duplicates"]
