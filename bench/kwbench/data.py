"""Synthetic request-log records: realistic enough to exercise every detector, cheap enough to make millions.

Records are pre-encoded JSON bytes (the shape of the README's request log record) written once to a JSONL file
with a sidecar file of Kafka keys (`<tenant>/<key_id>`), and reused by every phase: the fill, the ceiling,
keywatch, the peer and the replay all read the same bytes.

Mix: key activity is skewed (a few busy keys, a long tail), every key is used at least once; each key has one
to three stable IPv4 /24s (and a third of keys also a stable IPv6 /64) that carry ~97 % of its requests, the
rest come from ranges never seen before; statuses are ~90 % 2xx, ~8 % 4xx (401/403/404/429/400), ~2 % 5xx.
Event times rise through the file over `span_hours`, ending at generation time (never in the future, which
keywatch would dead-letter), with a little jitter so per-key order is not perfect.
"""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

METHODS = ("GET",) * 7 + ("POST",) * 2 + ("DELETE",)
RESOURCES = ("customers", "invoices", "charges", "subscriptions", "products", "events")
STATUS_4XX = (401, 403, 404, 404, 429, 400)
AGENTS = ("acme-sdk/1.2", "python-requests/2.32", "curl/8.5.0", "Go-http-client/1.1", "okhttp/4.12")


@dataclass(frozen=True)
class Dataset:
    """A generated record file and its keys file."""

    records_path: Path
    keys_path: Path
    records: int
    keys: int

    def load(self) -> tuple[list[bytes], list[bytes]]:
        """Kafka keys and values, in file order."""
        values = self.records_path.read_bytes().splitlines()
        keys = self.keys_path.read_bytes().splitlines()
        if len(values) != self.records or len(keys) != self.records:
            raise RuntimeError(f"{self.records_path} is incomplete: delete it and run again")
        return keys, values


def iso_ms(ms: int) -> str:
    """RFC 3339 with milliseconds and Z, as a gateway writes it."""
    secs, rem = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rem:03d}Z"


def subject(tenant_no: int, key_no: int) -> tuple[str, str]:
    """Tenant and key id of a synthetic key."""
    env = "test" if key_no % 5 == 4 else "live"
    return f"t{tenant_no:04d}", f"key_{env}_{key_no:07d}"


def generate(directory: Path, records: int, keys: int, *, span_hours: float = 26.0, seed: int = 6) -> Dataset:
    """Write (or reuse) `records` request records over `keys` keys; return the dataset."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"requests-{records}-{keys}-{seed}-{span_hours:g}h"
    ds = Dataset(directory / f"{stem}.jsonl", directory / f"{stem}.keys", records, keys)
    if ds.records_path.exists() and ds.keys_path.exists():
        return ds
    if keys > records:
        raise ValueError("--keys must not exceed --records (every key is used at least once)")
    rng = random.Random(seed)
    tenants = max(1, keys // 500)
    # Per key: its tenant/key id, its stable networks and its user agent, pre-rendered.
    v4: list[list[str]] = []
    v6: list[str | None] = []
    heads: list[bytes] = []
    tails: list[str] = []
    for k in range(keys):
        tenant, key_id = subject(k % tenants, k)
        env = "sandbox" if "_test_" in key_id else "live"
        heads.append(f"{tenant}/{key_id}".encode())
        tails.append(f'"tenant":"{tenant}","key_id":"{key_id}","env":"{env}"')
        v4.append([_rand_v4_prefix(rng) for _ in range(rng.choice((1, 1, 2, 3)))])
        v6.append(f"2001:db8:{rng.randrange(1 << 16):x}:{rng.randrange(1 << 16):x}::" if k % 3 == 0 else None)
    agents = [rng.choice(AGENTS) for _ in range(keys)]
    # Every key once, then skewed activity: P(index < x) = (x / keys) ** 0.4, so the top 1 % get ~16 %.
    sequence = list(range(keys)) + [int(keys * rng.random() ** 2.5) for _ in range(records - keys)]
    rng.shuffle(sequence)
    end_ms = int(time.time() * 1000) - 60_000
    start_ms = end_ms - int(span_hours * 3600 * 1000)
    step = (end_ms - start_ms) / records
    rnd = rng.random
    tmp_records = ds.records_path.with_suffix(".tmp")
    tmp_keys = ds.keys_path.with_suffix(".keys.tmp")
    with tmp_records.open("wb") as out, tmp_keys.open("wb") as out_keys:
        lines: list[bytes] = []
        key_lines: list[bytes] = []
        for j, k in enumerate(sequence):
            ts = min(end_ms, int(start_ms + j * step + rnd() * 2000))
            r = rnd()
            if r < 0.97:
                if v6[k] is not None and r < 0.25:
                    ip = f"{v6[k]}{rng.randrange(1, 1 << 16):x}"
                else:
                    nets = v4[k]
                    ip = nets[int(r * len(nets)) % len(nets)] + str(1 + int(rnd() * 250))
            else:
                ip = _rand_v4_prefix(rng) + str(1 + int(rnd() * 250))
            s = rnd()
            status = (200 if s < 0.8 else 201) if s < 0.9 else (STATUS_4XX[int(s * 1000) % 6] if s < 0.98 else 503)
            method = METHODS[int(rnd() * 10)]
            path = f"/v1/{RESOURCES[j % 6]}/{int(rnd() * 5000)}"
            lines.append(
                (
                    f'{{"ts":"{iso_ms(ts)}",{tails[k]},"ip":"{ip}","method":"{method}","path":"{path}",'
                    f'"status":{status},"latency_ms":{rnd() * 80:.1f},"user_agent":"{agents[k]}","request_id":"r{j}"}}'
                ).encode()
            )
            key_lines.append(heads[k])
            if len(lines) >= 65536:
                out.write(b"\n".join(lines) + b"\n")
                out_keys.write(b"\n".join(key_lines) + b"\n")
                lines, key_lines = [], []
        if lines:
            out.write(b"\n".join(lines) + b"\n")
            out_keys.write(b"\n".join(key_lines) + b"\n")
    tmp_keys.rename(ds.keys_path)
    tmp_records.rename(ds.records_path)
    return ds


def _rand_v4_prefix(rng: random.Random) -> str:
    first = rng.choice((23, 34, 52, 63, 81, 91, 104, 141, 151, 185, 198, 203))
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}."


def background_templates(count: int, *, seed: int = 7) -> list[tuple[bytes, bytes, bytes]]:
    """(kafka key, prefix, suffix) of normal requests for the latency phase: value = prefix + ts + suffix."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        tenant, key_id = f"bg{n % 50:02d}", f"key_live_bg{n:06d}"
        net = _rand_v4_prefix(rng)
        prefix = b'{"ts":"'
        suffix = (
            f'","tenant":"{tenant}","key_id":"{key_id}","env":"live","ip":"{net}{rng.randrange(1, 250)}",'
            f'"method":"GET","path":"/v1/customers/{n}","status":200,"latency_ms":9.5}}'
        ).encode()
        out.append((f"{tenant}/{key_id}".encode(), prefix, suffix))
    return out


def revoked_event(tenant: str, key_id: str, ts_ms: int) -> bytes:
    """An `apiKey.revoked` lifecycle event."""
    return (
        f'{{"type":"apiKey.revoked","ts":"{iso_ms(ts_ms)}","tenant":"{tenant}","key_id":"{key_id}",'
        f'"name":"old ci key","env":"live","role":"writer","actor":"bench@keywatch.example"}}'
    ).encode()


def probe_request(tenant: str, key_id: str, ts_ms: int) -> bytes:
    """A request on a revoked key: triggers apiKey.usedAfterRevoke at once (past the 60 s grace period)."""
    return (
        f'{{"ts":"{iso_ms(ts_ms)}","tenant":"{tenant}","key_id":"{key_id}","env":"live","ip":"198.51.100.9",'
        f'"method":"GET","path":"/v1/customers","status":401,"request_id":"probe"}}'
    ).encode()


def now_iso() -> str:
    """The current time as RFC 3339."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Scenario:
    """`keywatch simulate`'s output: its request and lifecycle files."""

    requests_path: Path
    lifecycle_path: Path


def simulate(directory: Path, python: str, *, seed: int = 7) -> Scenario:
    """`keywatch simulate --out-dir <directory>/simulate-seed<seed> --seed <seed>` (its default scenario: a few
    hundred keys, each busy, 5.6 M requests), made once and reused: the same seed gives the same bytes."""
    out = directory / f"simulate-seed{seed}"
    scenario = Scenario(out / "requests.jsonl", out / "lifecycle.jsonl")
    if scenario.requests_path.exists() and scenario.lifecycle_path.exists():
        return scenario
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [python, "-m", "keywatch.cli.main", "simulate", "--out-dir", str(tmp), "--seed", str(seed)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return scenario


def first_lines(path: Path, lines: int) -> Path:
    """The first `lines` lines of `path` in a file beside it (made once), or `path` itself if it has no more."""
    head = path.with_name(f"{path.stem}-first{lines}{path.suffix}")
    if head.exists():
        return head
    tmp = head.with_suffix(".tmp")
    with path.open("rb") as src, tmp.open("wb") as dst:
        dst.writelines(itertools.islice(src, lines))
    if tmp.stat().st_size == path.stat().st_size:
        tmp.unlink()
        return path
    tmp.rename(head)
    return head
