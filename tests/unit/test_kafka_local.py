"""scripts/kafka-local's storage formatting, driven with a stand-in `java` (no JVM, no broker).

Every node of a cluster must be formatted with one cluster id, even though the nodes' formats run
side by side; a node formatted with an empty or different id never joins the cluster.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "kafka-local"
VERSION = "4.1.2"

FAKE_JAVA = r"""#!/usr/bin/env bash
# stands in for java: `-version`, `StorageTool format` (records the cluster id it was given and
# writes meta.properties into log.dirs), and a broker that exits at once
if [[ "$1" == "-version" ]]; then echo 'openjdk version "17.0.9" 2023-10-17' >&2; exit 0; fi
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    format) mode=format ;;
    kafka.Kafka) exit 1 ;;
    -t) id="${args[i + 1]}" ;;
    -c) props="${args[i + 1]}" ;;
  esac
done
if [[ "${mode:-}" == format ]]; then
  sleep 0.$((RANDOM % 3))
  echo "id=${id-<none>}" >>"$KEYWATCH_TEST_FAKE_JAVA_RECORD"
  dir="$(sed -n 's/^log\.dirs=//p' "$props")"
  mkdir -p "$dir"
  echo "cluster.id=$id" >"$dir/meta.properties"
  exit 0
fi
exit 2
"""


def _cksum(path: Path) -> str:
    with path.open("rb") as f:
        out = subprocess.run(["cksum"], stdin=f, capture_output=True, text=True, check=True)
    crc, size = out.stdout.split()[:2]
    return f"{crc}-{size}"


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    java = java_home / "bin" / "java"
    java.write_text(FAKE_JAVA)
    java.chmod(0o755)
    home = tmp_path / "kafka"
    libs = home / "libs"
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{VERSION}.jar").write_bytes(b"")
    pom = REPO / "scripts" / "kafka" / "pom.xml"
    (libs / ".resolved").write_text(f"kafka={VERSION} pom={_cksum(pom)}\n")
    env = dict(os.environ)
    env.update(
        JAVA_HOME=str(java_home),
        KAFKA_HOME=str(home),
        KAFKA_VERSION=VERSION,
        KAFKA_START_TIMEOUT="2",
        KEYWATCH_TEST_FAKE_JAVA_RECORD=str(tmp_path / "formats.txt"),
        PYTHON="false",  # no metadata probe: the stand-in broker never answers anyway
    )
    env.pop("KAFKA_NODES", None)
    env.pop("KAFKA_CONTROLLER_PORT", None)
    return env


def _start(env: dict[str, str], port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "start"],
        env={**env, "KAFKA_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _formats(env: dict[str, str]) -> list[str]:
    record = Path(env["KEYWATCH_TEST_FAKE_JAVA_RECORD"])
    return record.read_text().split() if record.exists() else []


@pytest.mark.parametrize("round_", range(4))  # the formats race: give a race several chances to show
def test_every_node_of_a_cluster_is_formatted_with_one_cluster_id(fake_env: dict[str, str], round_: int) -> None:
    done = _start(fake_env, 29001 + 10 * round_, "--nodes", "3")
    # the stand-in broker exits at once, so start itself fails; the formats are what is checked
    assert "formatting the storage of a node failed" not in done.stderr, done.stderr
    formats = _formats(fake_env)
    assert len(formats) == 3, (formats, done.stdout, done.stderr)
    (one,) = set(formats)
    cluster_id = one.removeprefix("id=")
    assert len(cluster_id) == 22, cluster_id
    assert not cluster_id.startswith("-"), cluster_id
    home = Path(fake_env["KAFKA_HOME"])
    assert (home / "cluster.id").read_text().strip() == cluster_id
    assert not list(home.glob("cluster.id.tmp.*"))


def test_a_node_formatted_later_joins_with_the_same_cluster_id(fake_env: dict[str, str]) -> None:
    _start(fake_env, 29051, "--nodes", "3")
    first = set(_formats(fake_env))
    home = Path(fake_env["KAFKA_HOME"])
    for meta in home.glob("node-2/data/meta.properties"):
        meta.unlink()  # node 2 lost its disk
    _start(fake_env, 29051, "--nodes", "3")
    formats = _formats(fake_env)
    assert len(formats) == 4, formats
    assert set(formats) == first, formats


def test_a_single_broker_gets_a_fresh_well_formed_cluster_id(fake_env: dict[str, str]) -> None:
    done = _start(fake_env, 29061)
    formats = _formats(fake_env)
    assert len(formats) == 1, (done.stdout, done.stderr)
    cluster_id = formats[0].removeprefix("id=")
    assert len(cluster_id) == 22, cluster_id
    assert not cluster_id.startswith("-"), cluster_id
