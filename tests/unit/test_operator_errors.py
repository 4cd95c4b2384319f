"""What an operator sees when something is wrong: one line naming what and what to do, a non-zero exit, and
never a traceback. Each case runs the real `keywatch` console script in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from keywatch.cli.main import _SHORT_HELP, cli
from keywatch.config import unknown_variables
from keywatch.contract.schemas import write_all
from keywatch.core import catalog

KEYWATCH = [sys.executable, "-m", "keywatch.cli.main"]


def _closed_port() -> int:
    """A loopback port nothing listens on (bound and released: free for the moment)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWATCH_")}
    env["KEYWATCH_DATA_DIR"] = str(tmp_path / "data")
    return env


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYWATCH, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 1, no traceback, and a last stderr line `Error: ...` holding `words`; that line."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    both = done.stdout + done.stderr
    assert "Traceback" not in both, both
    assert "Unclosed" not in both, both
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), done.stderr
    for word in words:
        assert word in last, last
    return last


@pytest.mark.parametrize("name", sorted(_SHORT_HELP))
def test_every_command_takes_dash_h(name: str) -> None:
    done = CliRunner().invoke(cli, [name, "-h"], prog_name="keywatch")
    assert done.exit_code == 0, done.output
    assert f"Usage: keywatch {name}" in done.output
    assert "-h, --help" in done.output


def test_the_command_list_is_not_cut_off() -> None:
    done = CliRunner().invoke(cli, ["-h"], terminal_width=200)
    assert done.exit_code == 0
    commands = done.output.split("Commands:")[1]
    for name, text in _SHORT_HELP.items():
        assert f"{name}  " in commands
        assert text in commands
    assert "..." not in commands


@pytest.mark.parametrize("name", sorted(_SHORT_HELP))
def test_commands_show_an_example_and_every_option_has_help(name: str) -> None:
    done = CliRunner().invoke(cli, [name, "--help"])
    marker = "Examples:" if "Examples:" in done.output else "Example"
    assert marker in done.output, done.output
    assert f"keywatch {name}" in done.output.split(marker, 1)[1]
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    bare = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
    assert bare == [], f"{name}: options without help: {bare}"


@pytest.mark.parametrize(
    "args",
    [
        ["tail", "--max", "-1"],
        ["tail", "--max", "0"],
        ["tail", "--idle-exit", "-1"],
        ["worker", "--broker-timeout", "-1"],
        ["worker", "--broker-timeout", "0"],
    ],
)
def test_impossible_numbers_are_refused(args: list[str]) -> None:
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2, done.output
    assert "Invalid value for" in done.output
    assert "Traceback" not in done.output


def test_tail_without_a_broker(clean_env: dict[str, str], tmp_path: Path) -> None:
    port = _closed_port()
    done = run(["tail", "--bootstrap-servers", f"127.0.0.1:{port}", "--max", "1"], clean_env, tmp_path)
    assert_one_line_error(done, f"127.0.0.1:{port}", "is the broker running?")


def test_tail_from_the_beginning_says_so(clean_env: dict[str, str], tmp_path: Path) -> None:
    port = _closed_port()
    done = run(["tail", "--bootstrap-servers", f"127.0.0.1:{port}", "--from-beginning"], clean_env, tmp_path)
    assert "from the beginning" in done.stderr
    assert "since" not in done.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_worker_when_the_metrics_port_is_taken(clean_env: dict[str, str], tmp_path: Path, taken_port: int) -> None:
    env = {**clean_env, "KEYWATCH_METRICS_PORT": str(taken_port), "KEYWATCH_PARTITONS": "8"}
    done = run(["worker", "--bootstrap-servers", f"127.0.0.1:{_closed_port()}"], env, tmp_path)
    assert_one_line_error(done, f"127.0.0.1:{taken_port}", "KEYWATCH_METRICS_PORT")
    # the typo is reported, with what was meant
    assert "KEYWATCH_PARTITONS is not a keywatch setting and is ignored (did you mean KEYWATCH_PARTITIONS?)" in (
        done.stdout + done.stderr
    )


def test_worker_logs_json_lines_when_asked(clean_env: dict[str, str], tmp_path: Path, taken_port: int) -> None:
    env = {**clean_env, "KEYWATCH_METRICS_PORT": str(taken_port), "KEYWATCH_LOG_FORMAT": "json"}
    done = run(["worker", "--bootstrap-servers", f"127.0.0.1:{_closed_port()}"], env, tmp_path)
    import json

    logged = [line for line in (done.stdout + done.stderr).splitlines() if not line.startswith("Error: ")]
    assert logged
    for line in logged:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert record["time"].endswith("Z")


def test_schemas_check_tells_missing_from_out_of_date(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(cli, ["schemas", "--check", "--dir", str(tmp_path / "none")])
    assert done.exit_code == 1
    assert "schemas missing" in done.output
    assert "out of date" not in done.output
    written = write_all(tmp_path / "s", catalog.alert_types())
    written[0].write_text("{}")
    written[1].unlink()
    done = runner.invoke(cli, ["schemas", "--check", "--dir", str(tmp_path / "s")])
    assert done.exit_code == 1
    assert f"missing: {written[1].name}" in done.output
    assert f"out of date: {written[0].name}" in done.output


def test_unknown_variables_name_the_setting_meant() -> None:
    env = {
        "KEYWATCH_PARTITONS": "8",
        "KEYWATCH_PARTITIONS": "8",
        "KEYWATCH_TEST_BOOTSTRAP": "127.0.0.1:1",
        "KEYWATCH_CONFIG": "x.toml",
        "KEYWATCH_ZZZ": "1",
        "PATH": "/bin",
    }
    lines = unknown_variables(env)
    assert lines == [
        "KEYWATCH_PARTITONS is not a keywatch setting and is ignored (did you mean KEYWATCH_PARTITIONS?)",
        'KEYWATCH_ZZZ is not a keywatch setting and is ignored (see README "Configuration" for the settings)',
    ]


def test_replay_to_an_unwritable_place(clean_env: dict[str, str], tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text("")
    done = run(["replay", "--requests", str(requests), "--out", "/proc/nope/x.jsonl"], clean_env, tmp_path)
    assert_one_line_error(done, "cannot write the alerts to /proc/nope/x.jsonl")


def test_replay_progress_into_a_file_has_no_carriage_returns(clean_env: dict[str, str], tmp_path: Path) -> None:
    from tests.factories import as_bytes, request_dict

    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"".join(as_bytes(request_dict(ts=f"2026-01-05T09:{m:02d}:00Z")) + b"\n" for m in range(60)))
    done = run(["replay", "--requests", str(requests), "--out", str(tmp_path / "a.jsonl")], clean_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    assert "replayed 60 requests" in done.stderr
