"""Secrets behind escapes never survive ingest: JSON `\\uXXXX` (either case, surrogate pairs), `\\/`, percent-encoding
(single, double, either case of hex, `+` for blanks) and mixed-case names, in every field (the browser headers
`origin`, `referer`, `sec_fetch_*` too: a token in a Referer's query string), in unknown fields, in object keys and
in the Kafka key, through the real ingest and detect; no output (the keyed, alert and DLQ topics, state, the bodies
the Alertmanager and webhook sinks would POST, the log at DEBUG) gives a planted secret back after any decoding a
reader might apply.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import logging
import random
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.deadletter import DeadLetter
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.partitioner import partition_of
from keywatch.pipeline.processor import Processor
from keywatch.redact import PREFIX, Redactor
from keywatch.runtime import make_engine
from keywatch.sinks.alertmanager import AlertmanagerSink
from keywatch.sinks.base import MemorySink
from keywatch.sinks.webhook import WebhookSink
from tests.factories import as_bytes, lifecycle_dict, request_dict
from tests.readers import recoverable

NOW = datetime(2026, 1, 9, 12, tzinfo=UTC)
T0 = datetime(2025, 12, 30, 9, tzinfo=UTC)
KEY = b"escape-test-redaction-key"
MAX_RECORD_BYTES = 4096
PARTITIONS = 4
ALNUM = string.ascii_letters + string.digits
MARK = "pl4nT"  # every planted core starts with it: upper, lower and a digit, and nothing else in a run has it

# -- what is planted ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plant:
    """A secret as written into a record (`text`) and the parts of it that must never come out (`cores`)."""

    kind: str
    text: str
    cores: tuple[str, ...]


def _mixed_case(rnd: random.Random, name: str) -> str:
    return "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in name)


def _source_words() -> str:
    """Every string constant of keywatch's source, lowercased: alert types, runbook anchors, state slot names...
    Outputs always hold some of them, so a secret made of one would be "found" in an output without leaking
    (hypothesis draws text from the constants of the code under test)."""
    words = []
    for path in (Path(__file__).resolve().parents[2] / "src" / "keywatch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words.append(node.value.lower())
    return "\n".join(words)


SOURCE_WORDS = _source_words()


def _distinctive(body: str) -> bool:
    """Whether a secret's core (and its last 12 characters, which the oracle also looks for) is in no constant
    keywatch writes anyway."""
    core = (MARK + body).lower()
    return core[-12:] not in SOURCE_WORDS and body.lower()[-12:] not in SOURCE_WORDS


@st.composite
def plants(draw: st.DrawFn) -> Plant:
    """One secret of every kind the redactor knows, with mixed-case names and a distinctive core."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    kind = draw(st.sampled_from(["bearer", "named", "jwt", "prefixed", "entropy"]))
    body = draw(st.text(alphabet=ALNUM, min_size=11, max_size=24).filter(_distinctive))
    core = MARK + body
    if kind == "bearer":
        blank = draw(st.sampled_from([" ", "  ", "\t", "+", "\u00a0"]))
        return Plant(kind, _mixed_case(rnd, "bearer") + blank + core, (core,))
    if kind == "named":
        name = draw(
            st.sampled_from(
                ["token", "access_token", "refresh_token", "api_key", "api-key", "apikey", "x-api-key", "auth_token",
                 "secret", "client_secret", "password", "passwd", "pwd", "authorization"]
            )
        )  # fmt: skip
        sep = draw(st.sampled_from(["=", ": ", ":", " = ", '":"', "='"]))
        return Plant(kind, _mixed_case(rnd, name) + sep + core, (core,))
    if kind == "jwt":
        payload = MARK + draw(st.text(alphabet=ALNUM + "_-", min_size=6, max_size=30).filter(_distinctive))
        signature = MARK + draw(st.text(alphabet=ALNUM + "_-", min_size=6, max_size=30).filter(_distinctive))
        return Plant(kind, f"eyJ{core}.{payload}.{signature}", (core, payload, signature))
    if kind == "prefixed":
        prefix = draw(st.sampled_from(["sk_live_", "sk_test_", "rk_live_", "kws_", "sk_", "secret_sandbox_"]))
        return Plant(kind, _mixed_case(rnd, prefix) + core, (core,))
    long_body = body + draw(st.text(alphabet=ALNUM, min_size=16, max_size=30).filter(lambda t: _distinctive(body + t)))
    return Plant(kind, MARK + long_body, (MARK + long_body,))


# Around a secret: text that leaves it a secret (a letter or digit right before it would make it part of a word).
CONTEXTS = [
    ("", ""), ("curl/8 ", ""), ("/v1/x?a=1&", "&b=2"), ("/v1/x?", ""), ("\U0001f600 ", " \U0001f600"),
    ("(", ")"), ("\t", "\n"), ("/p/", "/q"), ('"', '"'), ("a\\b ", " c\\d"), ("100% ", " 50%"),
    ("https://app.example/callback?", ""), ("https://app.example/cb?state=1&", "#x"), ("chrome-extension://", "/"),
]  # fmt: skip


def percent_encode(rnd: random.Random, text: str, share: float) -> str:
    """`text` with a random share of its characters percent-encoded (UTF-8 bytes, hex in either case; blanks
    sometimes as `+`); `%` always, so that decoding once gives `text` back."""
    out = []
    for char in text:
        if char == " " and rnd.random() < share:
            out.append("+")
        elif char == "%" or rnd.random() < share:
            out.extend(
                (f"%{b:02X}" if rnd.random() < 0.5 else f"%{b:02x}") for b in char.encode("utf-8", "surrogatepass")
            )
        else:
            out.append(char)
    return "".join(out)


def encoded(rnd: random.Random, text: str) -> str:
    """`text` percent-encoded zero, one or two times over."""
    for _ in range(rnd.choice([0, 1, 1, 2])):
        text = percent_encode(rnd, text, rnd.choice([0.1, 0.5, 1.0]))
    return text


def json_string(rnd: random.Random, text: str, share: float) -> str:
    """`text` as a JSON string literal, a random share of its characters as `\\uXXXX` (either case, surrogate
    pairs for astral characters) and `/` sometimes as `\\/`."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char == "/" and rnd.random() < share:
            out.append("\\/")
        elif char in '"\\' or code < 0x20 or rnd.random() < share:
            units = [code] if code < 0x10000 else [0xD800 + ((code - 0x10000) >> 10), 0xDC00 + (code & 0x3FF)]
            out.extend((f"\\u{u:04X}" if rnd.random() < 0.5 else f"\\u{u:04x}") for u in units)
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def json_text(rnd: random.Random, value: Any, share: float) -> str:
    """`value` as JSON with every string (keys too) escaped by `json_string`."""
    if isinstance(value, str):
        return json_string(rnd, value, share)
    if isinstance(value, dict):
        items = (f"{json_string(rnd, k, share)}:{json_text(rnd, v, share)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(json_text(rnd, v, share) for v in value) + "]"
    return orjson.dumps(value).decode()


REQUEST_FIELDS = [
    "ts", "tenant", "key_id", "env", "ip", "method", "path", "status", "latency_ms", "user_agent", "request_id",
    "origin", "referer", "sec_fetch_site", "sec_fetch_mode",
]  # fmt: skip
LIFECYCLE_FIELDS = [
    "type", "ts", "tenant", "key_id", "name", "env", "role", "actor", "replaces_key_id", "ip", "channel", "mfa",
]  # fmt: skip
TARGETS = [("requests", f) for f in [*REQUEST_FIELDS, "extra", "object_key"]] + [
    ("lifecycle", f) for f in [*LIFECYCLE_FIELDS, "extra", "object_key"]
]


@dataclass
class Scenario:
    """Input records (topic, key, value) with one secret planted, and the secret."""

    plant: Plant
    records: list[tuple[str, bytes | None, bytes]]


def _ts(delta: timedelta) -> str:
    return (T0 + delta).isoformat().replace("+00:00", "Z")


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A key's life (created, used, used from a new network, revoked, used again) with a secret planted under
    some escaping in one field of every record of one kind, in the Kafka key of every record, and four broken
    copies of a planted record (invalid JSON, invalid UTF-8, oversize, a bad field) for the dead-letter paths."""
    plant = draw(plants())
    topic, target = draw(st.sampled_from(TARGETS))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    share = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    life = [
        ("lifecycle", lifecycle_dict(ts=_ts(timedelta(0)), channel="portal", mfa=True)),
        ("requests", request_dict(ts=_ts(timedelta(minutes=1)), ip="192.0.2.10")),
        # past the longest learning period, a new network: usedFromNewIp (its evidence has the path)
        ("requests", request_dict(ts=_ts(timedelta(days=8)), ip="203.0.113.9")),
        # a revocation through the API: apiKey.managedOutsidePortal (its evidence and summary show the channel)
        ("lifecycle", lifecycle_dict(type="apiKey.revoked", ts=_ts(timedelta(days=8, minutes=1)), channel="api")),
        ("requests", request_dict(ts=_ts(timedelta(days=8, minutes=2)), ip="203.0.113.9")),  # usedAfterRevoke
    ]
    records: list[tuple[str, bytes | None, bytes]] = []
    planted: list[str] = []
    for kind, record in life:
        if kind == topic:
            before, after = rnd.choice(CONTEXTS)
            value = before + encoded(rnd, plant.text) + after
            if target == "extra":
                record["note"] = {"deep": [value]}
            elif target == "object_key":
                record[value] = 1
            else:
                record[target] = value
        raw = json_text(rnd, record, share)
        if kind == topic:
            planted.append(raw)
        records.append((kind, _kafka_key(rnd, plant), raw.encode()))
    raw = rnd.choice(planted).encode()
    records += [
        (topic, _kafka_key(rnd, plant), raw[:-1]),  # not JSON
        (topic, _kafka_key(rnd, plant), raw[:-1] + b"\xff}"),  # not UTF-8
        (topic, _kafka_key(rnd, plant), raw[:-1] + b',"pad":"' + b"x" * MAX_RECORD_BYTES + b'"}'),  # oversize
        (topic, _kafka_key(rnd, plant), raw[:-1] + b',"ip":"300.1.1.1"}'),  # a bad field (the last one counts)
    ]
    return Scenario(plant, records)


def _kafka_key(rnd: random.Random, plant: Plant) -> bytes:
    """The secret as a Kafka key: as text, as a JSON string or inside a JSON object, under some escaping."""
    text = encoded(rnd, plant.text)
    form = rnd.choice(["text", "json", "object"])
    if form == "text":
        return text.encode()
    share = rnd.choice([0.0, 0.3, 1.0])
    return json_text(rnd, text if form == "json" else {"k": text}, share).encode()


# -- what a reader may do with an output -------------------------------------------------------------------------


def recovered(plant: Plant, blobs: dict[str, list[bytes]]) -> list[str]:
    """Where a core of the planted secret (or its last 12 characters) can be read back."""
    return recoverable(plant.cores, blobs)


# -- the pipeline ----------------------------------------------------------------------------------------------


async def run_pipeline(records: list[tuple[str, bytes | None, bytes]]) -> tuple[MemorySink, dict[bytes, bytes]]:
    """Ingest (`pack_batch`) then detect (`detect_message`) the records, as the worker does, keyed messages
    (forwards included) until none is left."""
    sink, store = MemorySink(), {}
    processor = Processor(
        make_engine(Settings()),
        sink,
        Topics("requests", "lifecycle"),
        max_record_bytes=MAX_RECORD_BYTES,
        clock=lambda: NOW,
        redactor=Redactor(KEY),
    )
    batch = processor.pack_batch(
        [(topic, 0, offset, key, value) for offset, (topic, key, value) in enumerate(records)],
        lambda subject: partition_of(subject, PARTITIONS),
    )
    assert batch.accepted + len(batch.dead_letters) == len(records)
    for letter in batch.dead_letters:
        await sink.send("dlq", letter.key, letter.value)
    for target, messages in batch.keyed.items():
        for message in messages:
            await sink.send("keyed", None, message)
            await processor.detect_message(None, message, store, target)
    done = 0
    while done < len(sink.messages["keyed"]):
        key, value = sink.messages["keyed"][done]
        done += 1
        if key is not None:  # hand-offs (single or packed per subject); ingest's packed ones were detected above
            await processor.detect_message(key, value, store, partition_of(key, PARTITIONS))
    return sink, store


def outputs(sink: MemorySink, store: dict[bytes, bytes], log: str) -> dict[str, list[bytes]]:
    """Every output, dead letters' key and payload base64-decoded; the alerts also as the bodies the Alertmanager
    and webhook sinks would POST."""
    blobs: dict[str, list[bytes]] = {
        name: [part or b"" for pair in sink.messages[name] for part in pair] for name in ("keyed", "alerts", "dlq")
    }
    alerts = [Alert.model_validate_json(v) for _, v in sink.messages["alerts"]]
    alertmanager = AlertmanagerSink("http://127.0.0.1:9", generator_url="http://127.0.0.1:9/keywatch")
    webhook = WebhookSink("http://127.0.0.1:9/hook", b"w" * 24)
    blobs["alertmanager"] = [alertmanager._request(alerts).body] if alerts else []
    blobs["webhook"] = [webhook._request([alert]).body for alert in alerts]
    letters = [DeadLetter.model_validate_json(v) for _, v in sink.messages["dlq"]]
    blobs["dlq payload"] = [base64.b64decode(d.payload_b64) for d in letters]
    blobs["dlq key"] = [base64.b64decode(d.key_b64) for d in letters if d.key_b64 is not None]
    blobs["dlq reason"] = [d.reason.encode() for d in letters]
    blobs["state"] = [*store, *store.values()]
    blobs["log"] = [log.encode()]
    return blobs


class ListHandler(logging.Handler):
    """Keeps every log record (caplog is function-scoped; hypothesis runs many examples per call)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record."""
        self.records.append(record)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(scenarios())
def test_no_escaped_secret_can_be_recovered_from_any_output(scenario: Scenario) -> None:
    """A secret of any kind under any escaping, in any field, key or Kafka key, is recoverable from no output."""
    logger, handler = logging.getLogger(), ListHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        sink, store = asyncio.run(run_pipeline(scenario.records))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    log = "\n".join(logging.Formatter().format(r) for r in handler.records)
    blobs = outputs(sink, store, log)
    assert len(blobs["dlq payload"]) >= 4  # the broken copies, at least
    assert any(PREFIX in b for b in blobs["dlq key"])  # the Kafka key's secret was seen and replaced
    assert recovered(scenario.plant, blobs) == []


# -- the readings model itself ---------------------------------------------------------------------------------


def test_readings_see_through_the_escapings_the_test_plants() -> None:
    """The test's model of a reader undoes JSON escapes and double percent-encoding, so recovery would show."""
    plant = Plant("prefixed", "sk_live_" + MARK + "abcdefghijk", (MARK + "abcdefghijk",))
    rnd = random.Random(7)
    hidden = json_text(rnd, {"p": percent_encode(rnd, percent_encode(rnd, plant.text, 1.0), 1.0)}, 1.0)
    assert plant.cores[0] not in hidden
    assert recovered(plant, {"raw": [hidden.encode()]})


def test_records_with_nothing_secret_are_unchanged_by_the_escaping_aware_path() -> None:
    """Benign records with escapes and percent signs are accepted exactly as without redaction."""
    raw = json_text(
        random.Random(3),
        request_dict(path="/v1/search?q=caf%C3%A9+100%25&sort=-created", user_agent="Mozilla/5.0 (X11; \u00e9) "),
        0.5,
    ).encode()
    with_redaction = asyncio.run(run_pipeline([("requests", b"acme/key_live_1", raw)]))[0]
    assert sink_entries(with_redaction) == [
        ["R", 1767614400000, "acme", "key_live_1", "live", "192.0.2.10", "GET",
         "/v1/search?q=caf%C3%A9+100%25&sort=-created", 200, 12.5, "Mozilla/5.0 (X11; \u00e9) ", "req-1"]
    ]  # fmt: skip
    assert as_bytes(request_dict()) == Redactor(KEY).redact_payload(as_bytes(request_dict()))


def sink_entries(sink: MemorySink) -> list[Any]:
    """The compact entries of every packed keyed message ingest sent (no key; detect's packed hand-offs, keyed by
    their subject here, are not records)."""
    return [
        entry
        for key, value in sink.messages["keyed"]
        if key is None and value[:1] == b"P"
        for entry in orjson.loads(value[1:])
    ]


def test_tokens_in_browser_headers_are_redacted_plainly_and_escaped() -> None:
    """An Origin or Referer carrying `?access_token=...` or a bearer token, plainly, JSON-escaped or
    percent-encoded: the browser alert fires on the record, and the secret is in no output."""
    plant = Plant("named", "access_token=" + MARK + "Qz8vRt2LmW9xKp", (MARK + "Qz8vRt2LmW9xKp",))
    bearer = Plant("bearer", "Bearer " + MARK + "Hb7TnX4cVu1Ye", (MARK + "Hb7TnX4cVu1Ye",))
    rnd = random.Random(13)
    records: list[tuple[str, bytes | None, bytes]] = [("lifecycle", b"acme/key_live_1", as_bytes(lifecycle_dict()))]
    for i, share in enumerate([0.0, 0.3, 1.0]):
        record = request_dict(
            ts=_ts(timedelta(minutes=1 + i, days=i)),
            origin="https://evil.example/?" + encoded(rnd, plant.text),
            referer="https://app.example/cb?" + (bearer.text if share == 0.0 else encoded(rnd, bearer.text)),
            sec_fetch_mode="cors",
        )
        records.append(("requests", b"acme/key_live_1", json_text(rnd, record, share).encode()))
    sink, store = asyncio.run(run_pipeline(records))
    alerts = [orjson.loads(v) for _, v in sink.messages["alerts"]]
    assert [a["type"] for a in alerts].count("apiKey.usedFromBrowser") == 3  # one per UTC day
    blobs = outputs(sink, store, "")
    assert recovered(plant, blobs) == []
    assert recovered(bearer, blobs) == []
