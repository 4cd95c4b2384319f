"""`bench/run micro`: what each step of keywatch's per-record path costs, in µs/record, without Kafka.

Runs the steps the worker runs for one request record (redact, decode+validate, re-serialise for the keyed
topic, re-validate in detect, load the key's state, the engine, store the state) over the bench's records, one
step at a time, plus cheaper alternatives for the expensive ones, so the gains in docs/performance.md are
measured rather than guessed. Single process, no broker: the faust/aiokafka share is what the profile adds.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from kwbench.data import generate
from kwbench.kafka import ROOT


def _timed(label: str, items: list[Any], fn: Callable[[Any], object], out: dict[str, float]) -> None:
    started = time.perf_counter()
    for item in items:
        fn(item)
    out[label] = 1e6 * (time.perf_counter() - started) / len(items)


def main(argv: list[str] | None = None) -> int:
    """Print µs/record per step; write bench/results/micro.json."""
    from keywatch.config import Settings
    from keywatch.contract.events import RequestRecord
    from keywatch.core.codec import decode_state, encode_state
    from keywatch.core.state import KeyState
    from keywatch.parsing import decode
    from keywatch.redact import Redactor
    from keywatch.runtime import make_engine

    p = argparse.ArgumentParser(prog="bench/run micro")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--sample", type=int, default=100_000, help="records timed per step")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "micro.json")
    args = p.parse_args(argv)
    ds = generate(ROOT / "bench" / ".data", args.records, args.keys)
    _, values = ds.load()
    values = values[: args.sample]
    now = datetime.now(UTC)
    skew = timedelta(minutes=5)
    redactor = Redactor(b"bench-redaction-key-0123456789")
    engine = make_engine(Settings())
    us: dict[str, float] = {}

    _timed("orjson.loads (the ceiling's decode)", values, orjson.loads, us)
    _timed("redact (secrets scrub)", values, redactor.redact, us)
    records: list[Any] = []
    _timed(
        "decode: orjson + pydantic validate (ingest)",
        values,
        lambda v: records.append(decode(v, RequestRecord, now=now, max_future_skew=skew)),
        us,
    )
    _timed("  alternative: RequestRecord.model_validate_json", values, RequestRecord.model_validate_json, us)
    payloads: list[bytes] = []
    _timed(
        "model_dump_json (ingest -> keyed topic)",
        records,
        lambda r: payloads.append(r.model_dump_json(exclude_none=True).encode()),
        us,
    )
    _timed("model_validate_json (detect re-validates)", payloads, RequestRecord.model_validate_json, us)
    ips = [r.ip for r in records]
    _timed("  ip check today: str(ipaddress.ip_address)", ips, lambda ip: str(ipaddress.ip_address(ip)), us)
    _timed("  alternative: socket.inet_pton (v4 fast path)", ips, _fast_ip, us)

    states: dict[str, KeyState] = {}

    def run_engine(record: Any) -> None:
        subject = record.subject
        states[subject] = engine.on_request(states.get(subject), record).state

    _timed("engine.on_request (all detectors)", records, run_engine, us)
    blobs: dict[str, bytes] = {}

    def store(record: Any) -> None:
        blobs[record.subject] = encode_state(states[record.subject])

    _timed("state save: codec.encode_state", records, store, us)
    _timed("state load: codec.decode_state", records, lambda r: decode_state(blobs[r.subject]), us)
    sizes = [len(b) for b in blobs.values()]
    per_record_today = sum(v for k, v in us.items() if not k.startswith("  ") and not k.startswith("orjson.loads (the"))
    result = {
        "us_per_record": us,
        "sum_of_keywatch_steps_us": per_record_today,
        "records_per_s_cpu_bound_without_kafka": 1e6 / per_record_today,
        "state_bytes_mean": sum(sizes) / len(sizes),
        "state_bytes_max": max(sizes),
        "keys": len(blobs),
        "sample": len(values),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    width = max(map(len, us))
    for name, value in us.items():
        sys.stdout.write(f"{name.ljust(width)}  {value:8.2f} µs\n")
    sys.stdout.write(
        f"{'sum of keywatch steps'.ljust(width)}  {per_record_today:8.2f} µs "
        f"(= {1e6 / per_record_today:,.0f} records/s before Kafka and faust)\n"
        f"state: {result['state_bytes_mean']:.0f} B mean, {result['state_bytes_max']} B max serialised, "
        f"{len(blobs):,} keys\n"
    )
    return 0


def _fast_ip(ip: str) -> str:
    """A canonical-form check that skips ipaddress for the common dotted-quad case."""
    if ":" not in ip:
        socket.inet_pton(socket.AF_INET, ip)
        return ip
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip))


if __name__ == "__main__":
    sys.exit(main())
