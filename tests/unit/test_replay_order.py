"""Replay gives the same alerts on any input order, split and compression; its inputs fail in one clean line."""

from __future__ import annotations

import gzip
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keywatch.cli.main import cli
from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.events import _parse_ts
from keywatch.eventsort import entry, sorted_entries
from keywatch.inputs import MAX_LINE_BYTES, InputError, read_lines
from keywatch.replay import Input, ReplaySummary, replay_inputs
from keywatch.runtime import make_engine
from tests.factories import as_bytes, lifecycle_dict, request_dict

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)
SCENARIO = ["--seed", "4", "--days", "3", "--tenants", "3", "--keys", "10", "--scale", "0.2"]


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _small_world() -> tuple[list[bytes], list[bytes]]:
    """A key created, used, hit by a 401 burst, revoked and used again from two addresses: order-sensitive ids."""
    lifecycle = [
        as_bytes(lifecycle_dict()),
        as_bytes(lifecycle_dict(type="apiKey.revoked", ts=_at(600))),
    ]
    requests = [as_bytes(request_dict(ts=_at(s), request_id=f"ok-{s}")) for s in range(0, 300, 20)]
    requests += [as_bytes(request_dict(ts=_at(300 + s), status=401, request_id=f"no-{s}")) for s in range(25)]
    requests += [as_bytes(request_dict(ts=_at(1200 + s), ip=f"203.0.113.{s}", request_id=f"r-{s}")) for s in (1, 2, 3)]
    return requests, lifecycle


def _ids(inputs: list[Input], sort_buffer: int = 200_000) -> tuple[set[str], ReplaySummary]:
    alerts: list[Alert] = []
    summary = replay_inputs(inputs, make_engine(Settings()), alerts.append, sort_buffer=sort_buffer)
    return {a.id for a in alerts}, summary


def _write(path: Path, lines: list[bytes], gzipped: bool) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if gzipped else data)
    return path


def _split(lines: list[bytes], parts: int, rng: random.Random) -> list[list[bytes]]:
    out: list[list[bytes]] = [[] for _ in range(parts)]
    for line in lines:
        out[rng.randrange(parts)].append(line)
    return out


SMALL_REQUESTS, SMALL_LIFECYCLE = _small_world()
SMALL_IDS, _ = _ids([Input.requests("r", SMALL_REQUESTS), Input.lifecycle("l", SMALL_LIFECYCLE)])


def test_the_small_world_has_order_sensitive_alerts() -> None:
    """The hand-made world raises usedAfterRevoke, whose id names the first request after the revocation."""
    alerts: list[Alert] = []
    replay_inputs(
        [Input.requests("r", SMALL_REQUESTS), Input.lifecycle("l", SMALL_LIFECYCLE)],
        make_engine(Settings()),
        alerts.append,
    )
    assert {"apiKey.created", "apiKey.revoked", "apiKey.usedAfterRevoke"} <= {a.type for a in alerts}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    order=st.permutations(range(len(SMALL_REQUESTS) + len(SMALL_LIFECYCLE))),
    parts=st.integers(1, 4),
    gzipped=st.lists(st.booleans(), min_size=4, max_size=4),
    buffer=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_any_permutation_split_and_gzip_gives_the_sorted_alerts(
    tmp_path: Path, order: list[int], parts: int, gzipped: list[bool], buffer: int, seed: int
) -> None:
    """Any permutation of the records, split into 1-4 files per kind, some gzipped, any sort buffer: same ids."""
    tagged = [("r", line) for line in SMALL_REQUESTS] + [("l", line) for line in SMALL_LIFECYCLE]
    shuffled = [tagged[i] for i in order]
    rng = random.Random(seed)
    inputs = []
    for kind in ("r", "l"):
        lines = [line for k, line in shuffled if k == kind]
        for i, chunk in enumerate(_split(lines, parts, rng)):
            path = _write(tmp_path / f"{kind}-{i}-{seed}.jsonl", chunk, gzipped[i])
            make = Input.requests if kind == "r" else Input.lifecycle
            inputs.append(make(str(path), read_lines(str(path))))
    got, _ = _ids(inputs, sort_buffer=buffer)
    assert got == SMALL_IDS


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], list[bytes], set[str]]:
    """A simulated scenario (rotations, incidents) and the alert ids of replay over its sorted files."""
    out = tmp_path_factory.mktemp("sim")
    result = CliRunner().invoke(cli, ["simulate", "--out-dir", str(out), *SCENARIO])
    assert result.exit_code == 0, result.output
    requests = (out / "requests.jsonl").read_bytes().splitlines()
    lifecycle = (out / "lifecycle.jsonl").read_bytes().splitlines()
    ids, _ = _ids([Input.requests("r", requests), Input.lifecycle("l", lifecycle)])
    return requests, lifecycle, ids


def _shuffled_within(lines: list[bytes], seconds: float, rng: random.Random) -> tuple[list[bytes], float]:
    """Lines reordered by event time plus a random delay of up to `seconds`; the largest displacement made."""
    keyed = []
    for line in lines:
        ts = _parse_ts(orjson.loads(line)["ts"]).timestamp()
        keyed.append((ts + rng.uniform(0, seconds), ts, line))
    keyed.sort()
    newest, worst = float("-inf"), 0.0
    for _, ts, _ in keyed:
        worst = max(worst, newest - ts)
        newest = max(newest, ts)
    return [line for _, _, line in keyed], worst


def test_shuffled_within_30_s_gives_the_sorted_alerts(scenario: tuple[list[bytes], list[bytes], set[str]]) -> None:
    """Records delayed by up to 30 s (a record up to 30 s behind one before it): the same alert ids."""
    requests, lifecycle, expected = scenario
    rng = random.Random(30)
    shuffled, worst = _shuffled_within(requests, 30.0, rng)
    assert 20.0 < worst <= 30.0
    got, summary = _ids([Input.requests("r", shuffled), Input.lifecycle("l", _shuffled_within(lifecycle, 30, rng)[0])])
    assert got == expected
    assert summary.out_of_order > 0
    assert 20_000 < summary.max_disorder_ms <= 30_000
    assert any("input not in event-time order" in line for line in summary.lines())


def test_reversed_split_and_gzipped_with_several_runs_gives_the_sorted_alerts(
    tmp_path: Path, scenario: tuple[list[bytes], list[bytes], set[str]]
) -> None:
    """`tac` on both files, split in three files each, two of them gzipped, sorted in runs of 700: same ids."""
    requests, lifecycle, expected = scenario
    inputs = []
    rng = random.Random(3)
    for kind, lines in (("r", requests[::-1]), ("l", lifecycle[::-1])):
        for i, chunk in enumerate(_split(lines, 3, rng)):
            path = _write(tmp_path / f"{kind}{i}.jsonl", chunk, gzipped=i < 2)
            make = Input.requests if kind == "r" else Input.lifecycle
            inputs.append(make(str(path), read_lines(str(path))))
    got, summary = _ids(inputs, sort_buffer=700)
    assert got == expected
    assert summary.runs == -(-summary.records // 700) > 3


def test_external_sort_equals_sorted() -> None:
    """Runs spilled to temporary files and merged give exactly `sorted` of the entries."""
    rng = random.Random(5)
    entries = [entry(rng.randrange(50), rng.randrange(2), f"line {rng.randrange(30)}".encode()) for _ in range(333)]
    with sorted_entries(iter(entries), buffer=10) as ordered:
        assert list(ordered) == sorted(entries)


@settings(max_examples=300, deadline=None)
@given(
    times=st.lists(st.integers(0, 40), max_size=120),
    buffer=st.integers(1, 25),
    order=st.sampled_from(["sorted", "reversed", "as drawn", "sorted, one swap"]),
)
def test_runs_in_order_one_after_the_other_are_chained_and_still_equal_sorted(
    times: list[int], buffer: int, order: str
) -> None:
    """Input already sorted (its runs follow one another: chained, not merged), nearly sorted, with ties across
    a run's boundary, or in any order: always exactly `sorted`."""
    entries = [entry(t, i % 2, f"line {i % 7}".encode()) for i, t in enumerate(times)]
    if order == "sorted":
        entries.sort()
    elif order == "reversed":
        entries.sort(reverse=True)
    elif order == "sorted, one swap" and len(entries) > 1:
        entries.sort()
        entries[0], entries[-1] = entries[-1], entries[0]
    with sorted_entries(iter(entries), buffer=buffer) as ordered:
        assert list(ordered) == sorted(entries)


def _run(args: list[str], stdin: bytes | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["replay", "--quiet", *args], input=stdin)
    return result.exit_code, result.output


def test_cli_reads_stdin_gzip_and_several_files(tmp_path: Path) -> None:
    """`--requests -` (gzip on stdin) with a second, plain requests file gives the ids of the sorted input."""
    half = len(SMALL_REQUESTS) // 2
    plain = _write(tmp_path / "b.jsonl", SMALL_REQUESTS[half:][::-1], gzipped=False)
    life = _write(tmp_path / "l.jsonl.data", SMALL_LIFECYCLE[::-1], gzipped=True)  # gzip told by its bytes
    out = tmp_path / "alerts.jsonl"
    stdin = gzip.compress(b"".join(line + b"\n" for line in SMALL_REQUESTS[:half][::-1]))
    code, output = _run(
        ["--requests", "-", "--requests", str(plain), "--lifecycle", str(life), "--out", str(out)], stdin
    )
    assert code == 0, output
    assert {Alert.model_validate_json(line).id for line in out.read_bytes().splitlines()} == SMALL_IDS
    assert "input not in event-time order" in output


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda p: ["--requests", str(p / "missing.jsonl")], "missing.jsonl: no such file"),
        (lambda p: ["--requests", str(p)], "is a directory"),
        (lambda p: ["--requests", "-", "--lifecycle", "-"], "stdin (-) can be given as at most one input"),
        (lambda p: ["--requests", "-", "--jobs", "2"], "stdin (-) cannot be an input"),
    ],
)
def test_cli_input_errors_are_one_line(tmp_path: Path, make_args: object, message: str) -> None:
    """A missing file, a directory, two stdins, stdin with --jobs: exit 2 and one line saying so."""
    assert callable(make_args)
    code, output = _run(make_args(tmp_path), b"")
    assert code == 2
    assert message in output
    assert "Traceback" not in output


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_cli_truncated_gzip_is_a_clean_error(tmp_path: Path, jobs: str) -> None:
    """A gzip cut short: exit 1 and one line naming the file, single process or sharded."""
    data = gzip.compress(b"".join(line + b"\n" for line in SMALL_REQUESTS * 40))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    code, output = _run(["--requests", str(path), "--jobs", jobs])
    assert code == 1, output
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1
    assert "cut.jsonl.gz: corrupt or truncated gzip" in lines[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blob=st.binary(max_size=600),
    compress=st.booleans(),
    cut=st.integers(0, 600),
)
def test_hostile_bytes_are_counted_or_a_clean_error(tmp_path: Path, blob: bytes, compress: bool, cut: int) -> None:
    """Any bytes, plain or gzipped and maybe cut: every line is processed or counted, or InputError; no crash."""
    good = SMALL_REQUESTS[0] + b"\n"
    data = good + blob + b"\n" + good
    if compress:
        data = gzip.compress(data)[: max(2, cut) if cut < 300 else None]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(data)
    failure: InputError | None = None
    summary = ReplaySummary()
    try:
        _, summary = _ids([Input.requests(str(path), read_lines(str(path)))])
    except InputError as exc:
        failure = exc
    if failure is not None:
        assert compress, "only a gzip stream can be corrupt"
        assert str(path) in str(failure)
        assert "\n" not in str(failure)
    elif not compress:
        lines = [line for line in data.split(b"\n") if line.strip()]
        assert summary.records + sum(summary.rejected.values()) == len(lines)
    else:
        assert summary.requests >= 1


def test_invalid_utf8_and_huge_lines_are_rejected_not_held(tmp_path: Path) -> None:
    """Invalid UTF-8 is counted as `encoding`; a line of 3 MiB is cut at the reader's bound and counted oversize."""
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b'{"ts": "\xff\xfe"}\n' + b"x" * (3 * MAX_LINE_BYTES) + b"\n" + SMALL_REQUESTS[0] + b"\n")
    assert max(len(line) for line in read_lines(str(path))) <= MAX_LINE_BYTES
    _, summary = _ids([Input.requests(str(path), read_lines(str(path)))])
    assert summary.rejected == {"encoding": 1, "oversize": 1}
    assert summary.requests == 1


def test_sharded_replay_reads_several_gzipped_files_in_any_order(
    tmp_path: Path, scenario: tuple[list[bytes], list[bytes], set[str]]
) -> None:
    """`--jobs 2` over reversed inputs split in two files each, one gzipped: the sorted file's ids."""
    requests, lifecycle, expected = scenario
    args = ["--jobs", "2", "--sort-buffer", "1000", "--out", str(tmp_path / "alerts.jsonl")]
    for option, lines in (("--requests", requests[::-1]), ("--lifecycle", lifecycle[::-1])):
        for i, chunk in enumerate((lines[::2], lines[1::2])):
            args += [option, str(_write(tmp_path / f"{option[2:]}-{i}", chunk, gzipped=i == 0))]
    code, output = _run(args)
    assert code == 0, output
    got = {Alert.model_validate_json(line).id for line in (tmp_path / "alerts.jsonl").read_bytes().splitlines()}
    assert got == expected
