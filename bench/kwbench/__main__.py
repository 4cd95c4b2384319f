"""`bench/run`: keywatch against the ceiling and a peer on a real local broker; one table, one JSON file."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from kwbench import profiling
from kwbench.data import first_lines, generate, simulate
from kwbench.kafka import ROOT, Broker, ceiling, changelog, create_topic, fill
from kwbench.latency import measure
from kwbench.report import reasons, render_table, rows
from kwbench.worker import PYTHON, Worker, wait_processed

BENCH = ROOT / "bench"
QUIX_PYTHON = BENCH / ".venv-quix" / "bin" / "python"
PHASES = ("ceiling", "keywatch", "changelog", "scale", "peer", "latency", "replay", "dense")


def log(message: str) -> None:
    """Progress on stderr, timestamped."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def load() -> dict[str, Any]:
    """Load averages and what `uptime` says."""
    one, five, fifteen = os.getloadavg()
    text = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    return {"load1": one, "load5": five, "load15": fifteen, "uptime": text}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--records", type=int, default=2_000_000, help="request records in the input topic")
    p.add_argument("--keys", type=int, default=100_000, help="distinct API keys among them")
    p.add_argument("--partitions", type=int, default=4, help="partitions of the input and keyed topics")
    p.add_argument("--span-hours", type=float, default=26.0, help="event-time span of the records")
    p.add_argument("--port", type=int, default=29192, help="port of the bench's own broker")
    p.add_argument("--kafka-home", type=Path, default=BENCH / ".kafka", help="KAFKA_HOME of the bench broker")
    p.add_argument("--data-dir", type=Path, default=BENCH / ".data", help="generated record files (reused)")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "latest.json", help="JSON results")
    p.add_argument("--scale-records", type=int, default=500_000, help="records timed for 1 vs 2 workers")
    p.add_argument("--latency-seconds", type=float, default=30.0, help="length of the paced latency run")
    p.add_argument("--latency-rate", type=int, default=10_000, help="records/s of the paced latency run")
    p.add_argument(
        "--latency-low-rate", type=int, default=300, help="records/s of a first, unloaded latency run (0: skip)"
    )
    p.add_argument("--probes-per-second", type=int, default=50, help="alert-triggering records per second")
    p.add_argument(
        "--dense-records",
        type=int,
        default=None,
        metavar="N",
        help="dense replay: only the first N lines of the simulated requests.jsonl (default: all, 5.6 M)",
    )
    p.add_argument(
        "--changelog-baseline",
        type=float,
        default=None,
        metavar="BYTES",
        help="changelog bytes on disk per record to compare with (the status says lower or not)",
    )
    p.add_argument(
        "--skip",
        default="",
        help=f"comma-separated phases to skip: {','.join(PHASES)} (replay skips both replays, dense the dense one)",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of every keywatch worker, e.g. PRODUCER_LINGER=0.01 (faust reads its settings "
        "from the environment): tuning experiments without editing src",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the worker and replay (bench/results/profile-*)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every phase; print the table; write the JSON."""
    args = parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phase(s) in --skip: {', '.join(sorted(unknown))}")
    if args.profile and not profiling.available():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    run_id = uuid.uuid4().hex[:6]
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    results_dir = args.out.parent
    results_dir.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"kwbench-{run_id}"  # noqa: S108
    work.mkdir(parents=True)
    scale_records = min(args.scale_records, args.records)
    res: dict[str, Any] = {
        "run_id": run_id,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "size": {"records": args.records, "keys": args.keys, "partitions": args.partitions},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "git": _git(),
        "worker_env": worker_env,
        "load_before": load(),
    }
    log(f"generating {args.records:,} records over {args.keys:,} keys (cached in {args.data_dir})")
    t = time.perf_counter()
    ds = generate(args.data_dir, args.records, args.keys, span_hours=args.span_hours)
    keys, values = ds.load()
    res["generate_seconds"] = time.perf_counter() - t
    res["bytes_per_record"] = sum(map(len, values)) / len(values)
    broker = Broker(args.port, args.kafka_home.resolve())
    workers: list[Worker] = []
    try:
        log(f"starting the bench broker on {broker.bootstrap} (home {broker.home})")
        broker.start()
        topic = f"bench.{run_id}.requests"
        asyncio.run(create_topic(broker.bootstrap, topic, args.partitions))
        log(f"filling {topic} ({args.partitions} partitions)")
        secs = asyncio.run(fill(broker.bootstrap, topic, keys, values, args.partitions))
        res["fill"] = {"seconds": secs, "records_per_s": args.records / secs}
        log(f"fill: {args.records / secs:,.0f} records/s")
        del keys, values

        if "ceiling" not in skip:
            first, total = asyncio.run(ceiling(broker.bootstrap, topic, args.records, args.partitions))
            res["ceiling"] = {"records_per_s": args.records / first, "seconds": first, "seconds_from_start": total}
            log(f"ceiling: {args.records / first:,.0f} records/s")

        if "keywatch" not in skip:
            w = Worker(broker.bootstrap, f"kwb{run_id}a", topic, work, args.partitions, extra_env=worker_env)
            workers.append(w)
            # keywatch never creates its input topics: its (empty) lifecycle topic is the bench's to create
            asyncio.run(create_topic(broker.bootstrap, w.topics["lifecycle"], args.partitions))
            spawned = time.perf_counter()
            w.start()
            spy = None
            if args.profile:
                w.wait_ready()
                spy = profiling.attach(w.pid, results_dir / "profile-worker.raw")
            marks = (scale_records,)
            cpu_start = w.cpu_seconds()
            prog = wait_processed([w], args.records, spawned=spawned, marks=marks)
            cpu_used = w.cpu_seconds() - cpu_start
            if spy is not None:
                profiling.detach(spy)
            gauges = _wait_gauges(w, args.keys)
            rss_done = w.rss_bytes()
            rss_settled = _settled_rss(w)
            res["keywatch"] = {
                "records_per_s": args.records / (prog.done - prog.first),
                "records_per_s_from_spawn": args.records / (prog.done - spawned),
                "seconds": prog.done - prog.first,
                "seconds_to_ready": prog.ready - spawned,
                "cpu_us_per_record": 1e6 * cpu_used / args.records,
                "cpu_utilisation": cpu_used / (prog.done - spawned),
                "ingested": prog.last.ingested,
                "alerts": int(prog.last.sum("keywatch_alerts_total")),
                "dead_letters": int(prog.last.sum("keywatch_dead_letters_total")),
                "rss_bytes": rss_done,
                "rss_settled_bytes": rss_settled,
                **gauges,
                "profiled": args.profile,
            }
            if scale_records in prog.marks:
                res.setdefault("scale", {})["one_worker_records_per_s"] = scale_records / (
                    prog.marks[scale_records] - prog.first
                )
            log(f"keywatch: {res['keywatch']['records_per_s']:,.0f} records/s")
            w.stop()
            if "changelog" not in skip:
                res["changelog"] = _changelog(broker, w.app_id, args.records, args.changelog_baseline)
                log(f"changelog: {res['changelog']['disk_bytes_per_record']:,.1f} B/record on disk")

        if "scale" not in skip and "keywatch" not in skip:
            pair = [
                Worker(broker.bootstrap, f"kwb{run_id}b", topic, work, args.partitions, name=n, extra_env=worker_env)
                for n in "12"
            ]
            workers.extend(pair)
            asyncio.run(create_topic(broker.bootstrap, pair[0].topics["lifecycle"], args.partitions))
            spawned = time.perf_counter()
            for w in pair:
                w.start()
            prog = wait_processed(pair, scale_records, spawned=spawned)
            two = scale_records / (prog.done - prog.first)
            scale = res.setdefault("scale", {})
            scale.update(records=scale_records, two_workers_records_per_s=two)
            if scale.get("one_worker_records_per_s"):
                scale["speedup"] = two / scale["one_worker_records_per_s"]
            log(f"scale-out: 2 workers {two:,.0f} records/s")
            for w in pair:
                w.stop()

        if "peer" not in skip:
            res["peer"] = _peer(broker.bootstrap, topic, args.records, run_id, work)
            log(f"peer (quix streams): {res['peer']['records_per_s']:,.0f} records/s")

        if "latency" not in skip:
            w = Worker(
                broker.bootstrap, f"kwb{run_id}l", f"kwb{run_id}l.requests", work, args.partitions, extra_env=worker_env
            )
            workers.append(w)
            asyncio.run(create_topic(broker.bootstrap, w.topics["requests"], args.partitions))
            asyncio.run(create_topic(broker.bootstrap, w.topics["lifecycle"], args.partitions))
            asyncio.run(create_topic(broker.bootstrap, w.topics["alerts"], args.partitions))
            w.start()
            w.wait_ready()
            time.sleep(2)  # let the idle worker settle before its resident set is read
            res["idle_rss_bytes"] = w.rss_bytes()
            # A low rate first (the pipeline's own latency, no backlog), then the target rate on the same worker.
            for label, rate in (("latency_low", args.latency_low_rate), ("latency", args.latency_rate)):
                if rate <= 0:
                    continue
                lat = asyncio.run(
                    measure(
                        broker.bootstrap,
                        w,
                        partitions=args.partitions,
                        seconds=args.latency_seconds,
                        rate=rate,
                        probes_per_s=max(1, min(args.probes_per_second, rate // 10)),
                        warmup_s=5.0,
                        run_id=f"{run_id}{label[-3:]}",
                    )
                )
                res[label] = {k: (None if v == float("inf") else v) for k, v in vars(lat).items()}
                res[label]["missing"] = lat.probes - lat.received
                log(f"{label}: p50 {lat.p50_s} s, p99 {lat.p99_s} s at {lat.rate_achieved:,.0f} records/s")
            w.stop()

        if "keywatch" in res and "idle_rss_bytes" in res and res["keywatch"].get("keys_tracked"):
            kw = res["keywatch"]
            res["memory"] = {
                "bytes_per_key": (kw.get("rss_settled_bytes", kw["rss_bytes"]) - res["idle_rss_bytes"])
                / kw["keys_tracked"],
                "bytes_per_key_at_completion": (kw["rss_bytes"] - res["idle_rss_bytes"]) / kw["keys_tracked"],
                "state_bytes_per_key": kw["state_bytes"] / kw["keys_tracked"],
                "keys": kw["keys_tracked"],
            }
    finally:
        for w in workers:
            w.stop()
        log("stopping the bench broker")
        broker.stop()

    if "replay" not in skip:
        res["replay"] = _replay(ds.records_path, results_dir if args.profile else None)
        log(f"replay: {res['replay']['records_per_s']:,.0f} records/s")

    if "replay" not in skip and "dense" not in skip:
        log(f"dense replay: keywatch simulate's default scenario (cached in {args.data_dir})")
        sim = simulate(args.data_dir, PYTHON)
        requests = sim.requests_path
        if args.dense_records is not None:
            requests = first_lines(requests, args.dense_records)
        res["replay_dense"] = _replay(requests, None, lifecycle=sim.lifecycle_path)
        res["replay_dense"]["first_requests"] = None if requests == sim.requests_path else args.dense_records
        log(f"dense replay: {res['replay_dense']['records_per_s']:,.0f} records/s")

    if args.profile:
        text = ""
        res["profiles"] = {}
        for name in ("worker", "replay"):
            raw = results_dir / f"profile-{name}.raw"
            if raw.exists():
                summary = profiling.summarise(raw)
                res["profiles"][name] = summary
                text += profiling.render(name, summary)
        (results_dir / "profile-summary.txt").write_text(text)
        log(f"profile summary in {results_dir / 'profile-summary.txt'}")

    res["load_after"] = load()
    res["table"] = rows(res)
    res["reasons"] = reasons(res)
    table = render_table(res)
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.write(table)
    log(f"results in {args.out}")
    return 0


def _settled_rss(w: Worker, seconds: float = 65.0) -> int:
    """The worker's resident set once idle after its run: the least VmRSS over `seconds` (sampled each second),
    which spans the worker's once-a-minute `malloc_trim` (what glibc keeps of freed blocks until then is not
    state: right after processing, the resident set depends on how long before the trim the run ended)."""
    end = time.monotonic() + seconds
    least = w.rss_bytes()
    while time.monotonic() < end:
        time.sleep(1.0)
        least = min(least, w.rss_bytes())
    return least


def _wait_gauges(w: Worker, keys: int, deadline_s: float = 40.0) -> dict[str, Any]:
    """keys_tracked / state_bytes come from a 15 s timer: wait until it has counted every key."""
    end = time.monotonic() + deadline_s
    tracked = size = 0
    while time.monotonic() < end:
        scrape = w.scrape()
        if scrape is not None:
            tracked = int(scrape.sum("keywatch_keys_tracked"))
            size = int(scrape.sum("keywatch_state_bytes"))
            if tracked >= keys:
                break
        time.sleep(1)
    return {"keys_tracked": tracked, "state_bytes": size}


def _peer(bootstrap: str, topic: str, records: int, run_id: str, work: Path) -> dict[str, Any]:
    if not QUIX_PYTHON.exists():
        raise SystemExit(f"{QUIX_PYTHON} is missing: bench/run creates it (quixstreams in its own virtualenv)")
    cmd = [
        str(QUIX_PYTHON),
        str(BENCH / "quix_peer.py"),
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        f"quix{run_id}",
        "--records",
        str(records),
        "--state-dir",
        str(work / "quix-state"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"quix peer failed ({out.returncode}):\n{out.stderr[-3000:]}")
    shutil.rmtree(work / "quix-state", ignore_errors=True)
    got = orjson.loads(out.stdout.strip().splitlines()[-1])
    return {
        "records_per_s": records / got["seconds_from_first"],
        "records_per_s_from_start": records / got["seconds_from_start"],
        "seconds": got["seconds_from_first"],
        "rss_bytes": got["rss_bytes"],
    }


def _changelog(broker: Broker, app_id: str, records: int, baseline: float | None) -> dict[str, Any]:
    """Bytes the worker wrote to its changelog topics per record it processed: the broker's log segment bytes
    (batch headers, compression) and the records' key+value bytes."""
    log_ = asyncio.run(changelog(broker.bootstrap, app_id, broker.data_dir))
    return {
        "topics": list(log_.topics),
        "records_processed": records,
        "changelog_records": log_.records,
        "changelog_offsets": log_.offsets,
        "disk_bytes": log_.disk_bytes,
        "record_bytes": log_.record_bytes,
        "largest_record_bytes": log_.largest_record_bytes,
        "disk_bytes_per_record": log_.disk_bytes / records,
        "record_bytes_per_record": log_.record_bytes / records,
        "baseline_disk_bytes_per_record": baseline,
    }


def _replay(path: Path, profile_dir: Path | None, *, lifecycle: Path | None = None) -> dict[str, Any]:
    cmd = [PYTHON, "-m", "keywatch.cli.main", "replay", "--requests", str(path), "--quiet", "--out", "/dev/null"]
    if lifecycle is not None:
        cmd += ["--lifecycle", str(lifecycle)]
    if profile_dir is not None:
        cmd = profiling.wrap(profile_dir / "profile-replay.raw") + cmd
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"replay failed ({out.returncode}):\n{out.stderr[-3000:]}")
    m = re.search(
        r"replayed (\d+) requests and (\d+) lifecycle events .* in ([0-9.]+)s \(([0-9,]+) records/s\)", out.stderr
    )
    if m is None:
        raise RuntimeError(f"cannot read the replay summary:\n{out.stderr[-2000:]}")
    records = int(m.group(1)) + int(m.group(2))
    return {
        "records_per_s": float(m.group(4).replace(",", "")),
        "records_per_s_wall": records / wall,
        "records": records,
        "requests": int(m.group(1)),
        "lifecycle": int(m.group(2)),
        "input": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "seconds_wall": wall,
        "profiled": profile_dir is not None,
    }


def _git() -> dict[str, Any]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return {"commit": head.stdout.strip(), "src_dirty": bool(dirty.stdout.strip())}


if __name__ == "__main__":
    sys.exit(main())
