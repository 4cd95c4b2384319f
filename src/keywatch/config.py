"""Worker configuration: environment variables (KEYWATCH_*) over an optional TOML file, validated."""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keywatch.contract.alerts import RUNBOOK_BASE

ENV_PREFIX = "KEYWATCH_"
# KEYWATCH_* variables that are not worker settings: read by scripts/ (set-up, demo, evaluation) and the tests.
# Any other KEYWATCH_* name is most likely a typo of a setting, and is reported at start-up.
SCRIPT_VARIABLES = frozenset(
    {
        "KEYWATCH_CONFIG",
        "KEYWATCH_VENV",
        "KEYWATCH_EXTRA_DEBS",
        "KEYWATCH_DEMO",
        "KEYWATCH_DEMO_ARGS",
        "KEYWATCH_EVAL_DIR",
        "KEYWATCH_EVAL_ARGS",
        "KEYWATCH_UPDATE_GOLDEN",
    }
)
SCRIPT_PREFIXES = ("KEYWATCH_TEST_",)


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says why."""


class Settings(BaseSettings):
    """Everything the worker and the CLI read from the environment (prefix KEYWATCH_)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    bootstrap_servers: str = Field(
        default="127.0.0.1:19092", description="Kafka bootstrap servers, comma separated host:port."
    )
    app_id: str = Field(
        default="keywatch", pattern=r"^[A-Za-z0-9._-]+$", description="Consumer group and internal-topic prefix."
    )
    topic_requests: str = Field(default="api.requests", description="Request log topic (input).")
    topic_lifecycle: str = Field(default="apikey.lifecycle", description="Key lifecycle topic (input).")
    topic_alerts: str = Field(default="keywatch.alerts", description="Alert topic (output).")
    topic_dlq: str = Field(default="keywatch.dlq", description="Dead-letter topic (output).")
    partitions: int = Field(
        default=4, ge=1, le=1024, description="Partitions of keywatch's keyed topic and state tables."
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        le=32767,  # a replication factor is an INT16 in Kafka's CreateTopics request
        description="Replicas of every topic keywatch creates (alerts, DLQ, keyed) and of faust's changelog and "
        "internal topics: 1 for a single local broker, 3 in production. Existing topics are never altered.",
    )
    changelog_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="zstd",
        description="Codec of the state changelog's record batches (the largest thing keywatch writes; states "
        "compress well): zstd writes least and, at the level the Kafka client uses (3), costs less CPU than lz4 "
        "(which the client runs at level 9); snappy costs least CPU and writes most; none turns it off. Only the "
        "changelog: the alert, DLQ and keyed topics are written uncompressed, for consumers whose clients lack a "
        "codec.",
    )
    store: Literal["memory://", "rocksdb://"] = Field(
        default="memory://", description="Table store: rocksdb:// in production (needs the rocksdb extra)."
    )
    data_dir: Path = Field(default=Path(".keywatch-data"), description="Where the worker keeps local state.")
    alert_source: str = Field(
        default="/keywatch",
        min_length=1,
        description="CloudEvents `source` of emitted alerts, a URI reference naming this deployment (e.g. "
        "/keywatch/prod-eu): set one per deployment so consumers can tell them apart.",
    )
    runbook_base_url: str = Field(
        default=RUNBOOK_BASE,
        description="Base URL of the triage steps: an alert's data.runbook is <base>#<anchor of its type> "
        "(point it at your own copy of docs/alerts.md).",
    )
    max_record_bytes: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Larger input records go to the DLQ."
    )
    max_future_skew_seconds: float = Field(
        default=300.0, ge=0, description="Records whose time is further ahead of the clock go to the DLQ."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: one readable line per record; json: one JSON object per line (time, level, logger, "
        "message, exc_info) for every logger, faust's and aiokafka's included.",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="Address of /metrics, /healthz, /readyz (0.0.0.0 in containers)."
    )
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="Port of the HTTP endpoints; 0 turns them off.")
    redaction_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="HMAC key for redacted secrets (16+ chars). Unset: a random key per process (hashes then "
        "do not correlate across restarts).",
    )
    geoip_asn_db: Path | None = Field(default=None, description="GeoLite2-ASN .mmdb file (optional).")
    geoip_country_db: Path | None = Field(default=None, description="GeoLite2-Country or -City .mmdb file (optional).")
    max_keys: int = Field(
        default=1_000_000,
        ge=0,
        description="Most keys with state, over all partitions (each partition keeps max_keys/partitions); beyond "
        "it the least recently seen keys are evicted. 0 = no cap.",
    )
    session_timeout_seconds: float = Field(
        default=60.0,
        ge=6,
        le=90,
        description="Consumer group session timeout: how long a worker that died without leaving keeps its "
        "partitions before the others take them over.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How to talk to Kafka: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    ssl_cafile: Path | None = Field(
        default=None, description="PEM file of the CAs that sign the broker certificates (default: system CAs)."
    )
    ssl_certfile: Path | None = Field(default=None, description="PEM client certificate (mutual TLS, optional).")
    ssl_keyfile: Path | None = Field(default=None, description="PEM private key of ssl_certfile.")
    ssl_check_hostname: bool = Field(default=True, description="Check that the broker certificate names the host.")
    metrics_tenant_labels: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Give up to this many tenants their own series in keywatch_tenant_alerts_total (the rest: "
        "_other); 0 = no tenant label at all.",
    )
    alertmanager_url: str | None = Field(
        default=None,
        description="Alertmanager base URL (http[s]://host:9093): alerts are also posted to its v2 API. Unset = off.",
    )
    alertmanager_flush_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often queued alerts are posted to Alertmanager."
    )
    alertmanager_batch_size: int = Field(default=64, ge=1, le=1000, description="Alerts per POST to Alertmanager.")
    webhook_url: str | None = Field(
        default=None,
        description="Webhook URL (http[s]://): every alert is also POSTed there, one CloudEvent per request, "
        "signed with KEYWATCH_WEBHOOK_SECRET. Unset = off.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="HMAC-SHA256 key (16+ characters) of the webhook's X-Keywatch-Signature header; required "
        "with KEYWATCH_WEBHOOK_URL.",
    )
    webhook_max_queue: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Alerts held for the webhook while it is slow or down; past it the oldest are dropped "
        '(keywatch_webhook_dropped_total{reason="overflow"}).',
    )
    missing_input_topics: Literal["wait", "exit"] = Field(
        default="wait",
        description="What to do when an input topic does not exist (keywatch never creates its inputs): wait, "
        "re-checking with backoff (not ready meanwhile), or exit with a non-zero status.",
    )
    stall_seconds: float = Field(
        default=120.0,
        ge=2,
        le=86400,
        description="An assigned partition with lag and no progress for this long makes /readyz 503 (progressing).",
    )
    watchdog_seconds: float = Field(
        default=600.0,
        ge=0,
        le=86400,
        description="Such a stall for this long makes /healthz 503 too (the liveness probe restarts the worker); "
        "0 = off. At least stall_seconds.",
    )

    @field_validator("alert_source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if any(c.isspace() for c in value) or not value.isascii():
            raise ValueError(f"{value!r} is not a URI reference (no spaces, ASCII only)")
        return value

    @field_validator("runbook_base_url")
    @classmethod
    def _check_runbook(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or "#" in value or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL without a #fragment")
        return value.rstrip("/")

    @field_validator("alertmanager_url", "webhook_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator("geoip_asn_db", "geoip_country_db", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _check_db(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file")
        return value

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and sasl_password "
                "(KEYWATCH_SASL_USERNAME, KEYWATCH_SASL_PASSWORD)"
            )
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError(
                "webhook_url needs webhook_secret (KEYWATCH_WEBHOOK_SECRET, 16+ characters): unsigned alerts "
                "could be forged by anyone who can reach the receiver"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: set both or neither")
        return self

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server.strip()!r} is not host:port")
        return value

    @field_validator("topic_requests", "topic_lifecycle", "topic_alerts", "topic_dlq")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        if not value or len(value) > 249 or any(c not in _TOPIC_CHARS for c in value) or value in (".", ".."):
            raise ValueError(f"{value!r} is not a legal Kafka topic name (letters, digits, '.', '_', '-')")
        return value

    @model_validator(mode="after")
    def _check_watchdog(self) -> Settings:
        if 0 < self.watchdog_seconds < self.stall_seconds:
            raise ValueError(
                f"watchdog_seconds ({self.watchdog_seconds:g}) must be 0 (off) or at least stall_seconds "
                f"({self.stall_seconds:g}) (KEYWATCH_WATCHDOG_SECONDS, KEYWATCH_STALL_SECONDS)"
            )
        return self

    @property
    def broker_url(self) -> str:
        """The bootstrap servers in faust's kafka:// form."""
        return ";".join(f"kafka://{s.strip()}" for s in self.bootstrap_servers.split(","))

    @property
    def bootstrap_list(self) -> list[str]:
        """The bootstrap servers as a list for aiokafka."""
        return [s.strip() for s in self.bootstrap_servers.split(",")]


_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _format_errors(exc: ValidationError, origin: dict[str, str]) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        if not err["loc"]:  # a check across several settings: its message names them
            lines.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        name = str(err["loc"][0])
        where = origin.get(name, f"{ENV_PREFIX}{name.upper()}")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "is not a keywatch setting"
        lines.append(f"{where}: {msg} (got {err.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def config_path(config_file: Path | None = None) -> Path | None:
    """The TOML file in effect: the one given, else $KEYWATCH_CONFIG, else none."""
    if config_file is not None:
        return config_file
    env = os.environ.get("KEYWATCH_CONFIG")
    return Path(env) if env else None


def read_table(path: Path, name: str) -> dict[str, Any]:
    """The `[name]` table of a TOML config file ({} when absent); ConfigError naming the file otherwise."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [{name}] must be a table, not {type(table).__name__}")
    return table


def setting_variables() -> frozenset[str]:
    """The environment variable of every setting."""
    return frozenset(f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per KEYWATCH_* variable that is neither a setting nor a script's: what it is and what was meant.

    pydantic-settings ignores an environment variable that names no field, so `KEYWATCH_PARTITONS=8` would be
    silently dropped while the same typo in the TOML file is an error; callers log these lines at start-up.
    """
    environ = os.environ if environ is None else environ
    settings = setting_variables()
    lines = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in settings or name in SCRIPT_VARIABLES:
            continue
        if name.startswith(SCRIPT_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(settings | SCRIPT_VARIABLES), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ' (see README "Configuration" for the settings)'
        lines.append(f"{name} is not a keywatch setting and is ignored{hint}")
    return lines


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings: defaults < TOML file (`config_file` or $KEYWATCH_CONFIG) < environment < overrides."""
    file_values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    path = config_path(config_file)
    if path is not None:
        worker = read_table(path, "worker")
        for name in worker:
            if f"{ENV_PREFIX}{name.upper()}" not in os.environ:
                file_values[name] = worker[name]
                origin[name] = f"{path} [worker].{name}"
    values = {**file_values, **overrides}
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
