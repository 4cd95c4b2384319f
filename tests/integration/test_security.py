"""Security against the real broker: SASL/SCRAM-SHA-512 over TLS (a test CA and broker certificate made at test
time), failing fast on wrong credentials or an untrusted certificate; and no secret fed in reaching any output.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from keywatch.config import Settings
from keywatch.security import aiokafka_kwargs
from tests.factories import as_bytes, lifecycle_dict, request_dict
from tests.integration.kafka_helpers import (
    PrivateBroker,
    WorkerProcess,
    collect,
    free_port,
    keyed_tags,
    produce,
    read_all,
    wait_caught_up,
    wait_until,
)
from tests.readers import recoverable

USER, PASSWORD = "keywatch", "kw-scram-pass-7"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed test CA: `<name>.crt` and `<name>.key` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt"


def make_broker_keystore(directory: Path, ca: str) -> Path:
    """A broker certificate for 127.0.0.1/localhost signed by `ca`, as a PEM keystore (PKCS#8 key + chain)."""
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    )
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "broker.key", "-out", "broker.csr", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "broker.crt", cwd=directory)  # fmt: skip
    keystore = directory / "broker-keystore.pem"
    keystore.write_text((directory / "broker.key").read_text() + (directory / "broker.crt").read_text())
    return keystore


@dataclass
class SaslBroker:
    """A private broker with a SASL_SSL listener (SCRAM-SHA-512) next to its PLAINTEXT one."""

    broker: PrivateBroker
    sasl_bootstrap: str
    ca: Path
    other_ca: Path

    def env(self, **overrides: str) -> dict[str, str]:
        """Worker environment for the SASL_SSL listener."""
        return {
            "KEYWATCH_SECURITY_PROTOCOL": "SASL_SSL",
            "KEYWATCH_SASL_MECHANISM": "SCRAM-SHA-512",
            "KEYWATCH_SASL_USERNAME": USER,
            "KEYWATCH_SASL_PASSWORD": PASSWORD,
            "KEYWATCH_SSL_CAFILE": str(self.ca),
            **overrides,
        }

    def client_security(self) -> dict[str, Any]:
        """aiokafka arguments for test clients, made by keywatch's own security module."""
        settings = Settings(
            bootstrap_servers=self.sasl_bootstrap,
            security_protocol="SASL_SSL",
            sasl_username=USER,
            sasl_password=PASSWORD,  # type: ignore[arg-type]
            ssl_cafile=self.ca,
        )
        return aiokafka_kwargs(settings)


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    """Start a broker with SASL_SSL (certificates and the SCRAM user made now); stopped after the module."""
    base = tmp_path_factory.mktemp("sasl")
    pki = base / "pki"
    ca = make_ca(pki, "test-ca")
    other_ca = make_ca(pki, "other-ca")
    keystore = make_broker_keystore(pki, "test-ca")
    broker = PrivateBroker(base / "kafka")
    sasl_port = free_port()
    while sasl_port in (broker.port, broker.port + 1):
        sasl_port = free_port()
    props = base / "sasl.properties"
    props.write_text(
        f"listeners=PLAINTEXT://127.0.0.1:{broker.port},CONTROLLER://127.0.0.1:{broker.port + 1},"
        f"SASL_SSL://127.0.0.1:{sasl_port}\n"
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker.port},SASL_SSL://127.0.0.1:{sasl_port}\n"
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL\n"
        "sasl.enabled.mechanisms=SCRAM-SHA-512\n"
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
        "ssl.keystore.type=PEM\n"
        f"ssl.keystore.location={keystore}\n"
    )
    broker.extra_env = {
        "KAFKA_EXTRA_PROPERTIES": str(props),
        "KAFKA_FORMAT_ARGS": f"--add-scram SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
    }
    broker.start()
    try:
        yield SaslBroker(broker, f"127.0.0.1:{sasl_port}", ca, other_ca)
    finally:
        broker.cleanup()


def _sasl_worker(sasl: SaslBroker, workdir: Path, **env: str) -> WorkerProcess:
    return WorkerProcess(
        bootstrap=sasl.sasl_bootstrap,
        workdir=workdir,
        metrics_port=0,
        extra_env=sasl.env(**env),
        client_security=sasl.client_security(),
    )


async def test_worker_over_sasl_scram_and_tls(sasl_broker: SaslBroker, tmp_path: Path) -> None:
    """With SASL_SSL settings the worker authenticates with SCRAM-SHA-512 over TLS; alerts flow; tail reads them."""
    worker = _sasl_worker(sasl_broker, tmp_path)
    security = sasl_broker.client_security()
    try:
        worker.start()
        await worker.wait_ready()
        assert "SASL_SSL, SCRAM-SHA-512 as keywatch" in worker.log_text()
        assert PASSWORD not in worker.log_text()
        event = lifecycle_dict(key_id="k_tls", ts="2026-01-05T09:00:00Z")
        await produce(worker.bootstrap, worker.topics["lifecycle"], [(None, as_bytes(event))], security=security)
        got = await collect(worker.bootstrap, worker.topics["alerts"], until=lambda m: len(m) >= 1, security=security)
        assert len(got) == 1
        alert = orjson.loads(got[0][1])
        assert alert["subject"] == "acme/k_tls"

        env = {**os.environ, **worker.env()}
        tail = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "keywatch.cli.main", "tail", "--topic", worker.topics["alerts"], "--json",
             "--from-beginning", "--max", "1", "--idle-exit", "30"],
            env=env, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert tail.returncode == 0, tail.stderr
        assert orjson.loads(tail.stdout.splitlines()[0])["id"] == alert["id"]
    finally:
        worker.stop()


async def _fails_fast(worker: WorkerProcess, deadline_s: float = 45.0) -> str:
    worker.start()
    assert worker.proc is not None
    started = time.monotonic()
    await wait_until(lambda: worker.proc is not None and worker.proc.poll() is not None, deadline_s=deadline_s,
                     what="the worker to give up")  # fmt: skip
    assert worker.proc.returncode != 0
    assert time.monotonic() - started < deadline_s
    return worker.log_text()


async def test_wrong_password_fails_fast_with_a_clear_message(sasl_broker: SaslBroker, tmp_path: Path) -> None:
    """A wrong SCRAM password stops the worker at once (non-zero exit), saying authentication failed."""
    log = await _fails_fast(_sasl_worker(sasl_broker, tmp_path, KEYWATCH_SASL_PASSWORD="not-the-password"))
    assert "SASL authentication failed for SCRAM-SHA-512 user 'keywatch'" in log
    assert "wrong user name or password" in log
    assert "not-the-password" not in log


async def test_untrusted_certificate_fails_fast_with_a_clear_message(sasl_broker: SaslBroker, tmp_path: Path) -> None:
    """A broker certificate not signed by the configured CA stops the worker at once, saying it is not trusted."""
    log = await _fails_fast(_sasl_worker(sasl_broker, tmp_path, KEYWATCH_SSL_CAFILE=str(sasl_broker.other_ca)))
    assert "is not trusted" in log
    assert "KEYWATCH_SSL_CAFILE" in log


# -- secrets ------------------------------------------------------------------------------------------------------

SECRETS = [
    b"sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrZXl3YXRjaCJ9.c2lnbmF0dXJlLXNlY3JldA",
    b"Q7xK2mP9vR4tY8wZ3nB6cF1hJ5lD0sGaE",
]


async def test_no_secret_reaches_any_output(worker_factory: Callable[..., WorkerProcess]) -> None:
    """Secrets in every field and in the Kafka key never appear in alerts, DLQ, keyed, changelog or the worker log."""
    worker = worker_factory(
        metrics_port=0, extra_env={"KEYWATCH_REDACTION_KEY": "r" * 24, "KEYWATCH_LOG_LEVEL": "DEBUG"}
    )
    worker.start()
    await worker.wait_ready()
    s1, s2, s3 = (s.decode() for s in SECRETS)
    lifecycle = [
        lifecycle_dict(key_id=s1, name=f"token={s3}", actor=f"Bearer {s2}", ts="2026-01-05T09:00:00Z"),
        lifecycle_dict(tenant=s3, key_id="k_sec", name=s2, actor=f"ops api_key={s1}", ts="2026-01-05T09:01:00Z"),
        lifecycle_dict(type="apiKey.revoked", key_id=s1, actor=s3, ts="2026-01-05T09:30:00Z"),
    ]
    requests = [
        request_dict(key_id=s1, path=f"/v1/x?api_key={s3}", user_agent=f"Bearer {s2}", request_id=s3,
                     ts="2026-01-05T10:00:00Z"),  # used after revocation: an alert whose evidence has the fields
        request_dict(key_id="k_sec", tenant=s3, path=f"/v1/{s1}", user_agent=s2, ts="2026-01-05T10:00:01Z"),
    ]  # fmt: skip
    bad = [
        (s1.encode(), b'{"ts":"2026-01-05T10:00:00Z","key_id":"' + SECRETS[1] + b'","ip":"300.1.1.1"}'),
        (SECRETS[2], b"Authorization: Bearer " + SECRETS[0] + b" not json"),
        (None, as_bytes(request_dict(ip="999.1.1.1", user_agent=s3, path=f"/p/{s2}"))),
    ]
    await produce(worker.bootstrap, worker.topics["lifecycle"], [(s2.encode(), as_bytes(e)) for e in lifecycle])
    await produce(worker.bootstrap, worker.topics["requests"], [(s3.encode(), as_bytes(r)) for r in requests] + bad)

    alerts = await collect(worker.bootstrap, worker.topics["alerts"], until=lambda m: len(m) >= 4)
    dlq = await collect(worker.bootstrap, worker.topics["dlq"], until=lambda m: len(m) >= len(bad))
    await wait_caught_up(worker.bootstrap, worker.app_id, worker.topics["keyed"])
    assert len(dlq) == len(bad)
    assert {a["type"] for a in (orjson.loads(v) for _, v in alerts)} >= {"apiKey.created", "apiKey.usedAfterRevoke"}
    outputs = {
        "alerts": await read_all(worker.bootstrap, worker.topics["alerts"]),
        "dlq": await read_all(worker.bootstrap, worker.topics["dlq"]),
        "keyed": await read_all(worker.bootstrap, worker.topics["keyed"]),
        "changelog": await read_all(worker.bootstrap, f"{worker.app_id}-keys-changelog"),
    }
    for name, messages in outputs.items():
        assert messages, name
        blob = b"\n".join((k or b"") + b"\t" + (v or b"") for k, v in messages)
        # dead letters carry the original record base64-encoded: look inside too
        letters = [orjson.loads(v) for _, v in messages] if name == "dlq" else []
        decoded = b"".join(base64.b64decode(d[f]) for d in letters for f in ("payload_b64", "key_b64") if d[f])
        for secret in SECRETS:
            assert secret not in blob, f"a secret reached {name}"
            assert secret not in decoded, f"a secret reached the payload of a dead letter in {name}"
        assert b"redacted:" in blob + decoded, name
    log = worker.log_text()
    assert "dead letter" in log
    for secret in SECRETS:
        assert secret.decode() not in log, "a secret reached the worker log"


# Secrets behind escapes: each (the part that must never come out, how it is written in the record's JSON).
ESCAPED = {
    "go_query": ("atok4plant9f8e7d6c5b4a3", r"/v1/x?a=1\u0026access_token=atok4plant9f8e7d6c5b4a3"),
    "name": ("Pq7Rr8Ss9Tt0Uu1Vv2Ww", r"ci sk_live_abc\u0050q7Rr8Ss9Tt0Uu1Vv2Ww"),
    "status": ("4eC39HqLyjWDarjtT1zdp7dX", r"sk\u005flive_4eC39HqLyjWDarjtT1zdp7dX"),
    "agent": ("AbCdEf0123456789xyzQ", r"curl\/8 \ud83d\ude00Bearer \u0041bCdEf0123456789xyzQ\ud83d\ude00"),
    "double": ("s3cr3tvalue99zz", r"/v1/y?API_KEY=%2573%2533cr3tvalue99zz"),
    "key_id": ("Zx9Yw8Vu7Ts6Rq5Po4Nm", r"sk%5Flive_Zx9Yw8Vu7Ts6Rq5Po4Nm"),
    "entropy": ("Q7xK2mP9vR4tY8wZ3nB6cF1hJ5lD0sGaE", r"\u0051\u0037xK2mP9vR4tY8wZ3nB6cF1hJ5lD0s%47aE"),
}


def _escaped_json(fields: dict[str, Any], raw: dict[str, str]) -> bytes:
    """A record as JSON with the `raw` fields written exactly as given (their escapes kept)."""
    body = orjson.dumps({k: v for k, v in fields.items() if k not in raw})[:-1]
    return body + b"".join(b',"' + k.encode() + b'":"' + v.encode() + b'"' for k, v in raw.items()) + b"}"


@pytest.fixture
async def alert_receiver() -> AsyncIterator[tuple[str, list[bytes], list[bytes]]]:
    """A real local HTTP server standing in for Alertmanager's v2 API and for a webhook (`/hook`): keeps every
    body posted to each."""
    bodies: list[bytes] = []
    hooked: list[bytes] = []

    async def alerts(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=200)

    async def hook(request: web.Request) -> web.Response:
        hooked.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts)
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), bodies, hooked
    finally:
        await server.close()


async def test_no_escaped_secret_reaches_any_output(
    worker_factory: Callable[..., WorkerProcess], alert_receiver: tuple[str, list[bytes], list[bytes]]
) -> None:
    """Secrets behind JSON escapes, percent-encoding (double too) and surrogate pairs, in fields, object keys and
    Kafka keys, cannot be read back from the alert, DLQ, keyed or changelog topics, Alertmanager, the webhook or
    the DEBUG log."""
    url, posted, hooked = alert_receiver
    worker = worker_factory(
        metrics_port=0,
        extra_env={
            "KEYWATCH_REDACTION_KEY": "r" * 24,
            "KEYWATCH_LOG_LEVEL": "DEBUG",
            "KEYWATCH_ALERTMANAGER_URL": url,
            "KEYWATCH_ALERTMANAGER_FLUSH_SECONDS": "0.2",
            "KEYWATCH_WEBHOOK_URL": f"{url}/hook",
            "KEYWATCH_WEBHOOK_SECRET": "w" * 24,
        },
    )
    worker.start()
    await worker.wait_ready()
    e = {name: raw for name, (_, raw) in ESCAPED.items()}
    lifecycle = [
        (
            rb"sk\u005flive_" + b"Zx9Yw8Vu7Ts6Rq5Po4Nm",
            _escaped_json(lifecycle_dict(ts="2025-12-30T09:00:00Z"), {"name": e["name"], "key_id": e["key_id"]}),
        ),
        (
            b'"' + e["status"].encode() + b'"',
            _escaped_json(lifecycle_dict(type="apiKey.revoked", ts="2026-01-08T10:00:00Z"), {"key_id": e["key_id"]}),
        ),
    ]
    requests = [
        (
            None,
            _escaped_json(
                request_dict(ts="2025-12-30T10:00:00Z", ip="192.0.2.10"),
                {"key_id": e["key_id"], "path": e["go_query"], "user_agent": e["agent"]},
            ),
        ),
        # nine days on, past the longest learning period: a new network (usedFromNewIp, its evidence has the path)
        (
            e["double"].encode(),
            _escaped_json(
                request_dict(ts="2026-01-08T09:00:00Z", ip="203.0.113.9"),
                {"key_id": e["key_id"], "path": e["go_query"]},
            ),
        ),
        # after the revocation: usedAfterRevoke, whose evidence has the path and user agent
        (
            None,
            _escaped_json(
                request_dict(ts="2026-01-08T11:00:00Z", ip="203.0.113.9"),
                {"key_id": e["key_id"], "path": e["double"], "user_agent": e["entropy"]},
            ),
        ),
    ]
    bad = [
        (None, _escaped_json(request_dict(status=None), {"status": e["status"]})),  # schema: the reason shows it
        (e["agent"].encode(), _escaped_json(request_dict(), {"user_agent": e["agent"]})[:-1]),  # not JSON
        (None, _escaped_json(request_dict(ip="300.1.1.1"), {e["status"]: "1", "note": e["go_query"]}) + b"\xff"),
        (None, _escaped_json(request_dict(ip="300.1.1.1"), {e["entropy"]: e["double"]})),  # an object key
    ]  # fmt: skip
    # In event-time order, each record on the keyed topic before the next is produced: records on two topics
    # (and, with different Kafka keys, on different partitions of one) are otherwise read in any order, and a
    # key whose nine-days-later request is read first learns that network instead of alerting on it.
    created, revoked = lifecycle
    ordered = [("lifecycle", *created), *(("requests", *r) for r in requests[:2]), ("lifecycle", *revoked)]
    for n, (topic, key, value) in enumerate([*ordered, ("requests", *requests[2])], 1):
        # one record at a time: the two requests have different Kafka keys (two input partitions), so even
        # produced together in order they could be ingested in the other order
        await produce(worker.bootstrap, worker.topics[topic], [(key, value)])
        await collect(
            worker.bootstrap,
            worker.topics["keyed"],
            until=lambda m, n=n: sum(tag in (b"R", b"L") for tag in keyed_tags(m)) >= n,
        )
    await produce(worker.bootstrap, worker.topics["requests"], bad)

    wanted = {"apiKey.created", "apiKey.usedFromNewIp", "apiKey.revoked", "apiKey.usedAfterRevoke"}
    alerts = await collect(
        worker.bootstrap,
        worker.topics["alerts"],
        until=lambda m: {orjson.loads(v)["type"] for _, v in m} >= wanted,
        deadline_s=120,
    )
    dlq = await collect(worker.bootstrap, worker.topics["dlq"], until=lambda m: len(m) >= len(bad))
    await wait_caught_up(worker.bootstrap, worker.app_id, worker.topics["keyed"])
    await wait_until(lambda: sum(len(orjson.loads(b)) for b in posted) >= len(alerts), deadline_s=30,
                     what="every alert posted to the Alertmanager receiver")  # fmt: skip
    await wait_until(lambda: len(hooked) >= len(alerts), deadline_s=30, what="every alert posted to the webhook")
    outputs: dict[str, list[bytes]] = {
        "alerts": [], "dlq": [], "keyed": [], "changelog": [], "alertmanager": posted, "webhook": hooked,
    }  # fmt: skip
    topics = {"alerts": worker.topics["alerts"], "dlq": worker.topics["dlq"], "keyed": worker.topics["keyed"],
              "changelog": f"{worker.app_id}-keys-changelog"}  # fmt: skip
    for name, topic in topics.items():
        messages = await read_all(worker.bootstrap, topic)
        outputs[name] = [part or b"" for pair in messages for part in pair]
    letters = [orjson.loads(v) for v in outputs["dlq"][1::2]]
    outputs["dlq payloads"] = [base64.b64decode(d[f]) for d in letters for f in ("payload_b64", "key_b64") if d[f]]
    outputs["log"] = [worker.log_text().encode()]
    assert recoverable([core for core, _ in ESCAPED.values()], outputs) == []
    assert all(outputs[name] for name in topics)
    assert any(b"redacted:" in blob for blob in outputs["dlq payloads"])
    assert any("redacted:" in d["reason"] for d in letters)
    assert "dead letter" in worker.log_text()
    types = {orjson.loads(v)["type"] for _, v in alerts}
    assert types >= wanted
    assert len(dlq) == len(bad)
