"""The peer: keywatch's core per-key state written with Quix Streams, for records/s on the same topic.

Runs in its own virtualenv (bench/.venv-quix: quixstreams pins confluent-kafka, pydantic and others apart from
keywatch's), so it imports nothing from keywatch. Same shape of pipeline as keywatch: decode, re-key by
`<tenant>/<key_id>` through a repartition topic (`group_by`, like keywatch's keyed topic), then one stateful
step per record against changelog-backed per-key state:
  - IP ranges: {range (/24, /64): [first_s, last_s, count]}, at most 64, least recently seen evicted;
  - per-minute counts over the last 6 minutes (a rolling ring, like the rate baseline's buckets);
  - 4xx counts per kind (401/403/404/429/other) over the same window.
No validation beyond JSON decoding and no alerts: a lower bound on the work keywatch does per record.
Prints one JSON line: {"records", "seconds_from_first", "seconds_from_start", "rss_bytes"}.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from quixstreams import Application, State
from quixstreams.models.serializers.json import JSONDeserializer

WINDOW = 6
MAX_RANGES = 64
KIND = {401: 1, 403: 2, 404: 3, 429: 4}


def range_of(ip: str) -> str:
    """/24 of an IPv4 address, /64 of an IPv6 one."""
    if ":" not in ip:
        return ip[: ip.rfind(".")] + ".0/24"
    return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))


def parse_ms(ts: str) -> int:
    """Epoch ms of an RFC 3339 time."""
    from datetime import datetime

    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def step(value: dict[str, Any], state: State[Any, Any]) -> None:
    """Update the key's state with one request."""
    ms = parse_ms(value["ts"])
    t, minute = ms // 1000, ms // 60_000
    st = state.get("s") or {"r": {}, "m": minute, "b": [[0] * 6 for _ in range(WINDOW)]}
    ranges = st["r"]
    rk = range_of(value["ip"])
    entry = ranges.get(rk)
    if entry is None:
        ranges[rk] = [t, t, 1]
        if len(ranges) > MAX_RANGES:
            del ranges[min(ranges, key=lambda k: ranges[k][1])]
    else:
        entry[1] = max(entry[1], t)
        entry[2] += 1
    buckets = st["b"]
    if minute > st["m"]:
        for _ in range(min(minute - st["m"], WINDOW)):
            buckets.pop(0)
            buckets.append([0] * 6)
        st["m"] = minute
    idx = WINDOW - 1 - (st["m"] - minute)
    if idx >= 0:
        bucket = buckets[idx]
        bucket[0] += 1
        status = value["status"]
        if 400 <= status < 500:
            bucket[KIND.get(status, 5)] += 1
    state.set("s", st)


def main() -> int:
    """Run until `--records` records went through the stateful step."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, value_deserializer=JSONDeserializer(loads=orjson.loads), key_deserializer="bytes")
    sdf = app.dataframe(topic)
    sdf = sdf.group_by(lambda v: f"{v['tenant']}/{v['key_id']}", name="subject")
    seen = {"n": 0, "first": 0.0, "done": 0.0}

    def count(value: dict[str, Any], state: State[Any, Any]) -> None:
        step(value, state)
        seen["n"] += 1
        if seen["n"] == 1:
            seen["first"] = time.perf_counter()
        if seen["n"] >= args.records and not seen["done"]:
            seen["done"] = time.perf_counter()
            app.stop()

    sdf = sdf.update(count, stateful=True)
    started = time.perf_counter()
    app.run(sdf)
    rss = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    done = seen["done"] or time.perf_counter()
    result = {
        "records": seen["n"],
        "seconds_from_first": done - seen["first"],
        "seconds_from_start": done - started,
        "rss_bytes": rss,
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0 if seen["n"] >= args.records else 1


if __name__ == "__main__":
    sys.exit(main())
