"""Detection settings: one validated, frozen `DetectionConfig`, loadable from the `[detection]` TOML section.

    [detection.rate]
    min_per_minute = 100
    [detection.sandbox.rate]      # per-environment overrides, only the settings that differ
    enabled = false

Every setting has a documented default (see docs/alerts.md); a bad one is reported by its full name,
e.g. `detection.live.rate.min_ratio: Input should be greater than or equal to 1 (got 0.5)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from keywatch.config import ConfigError, read_table
from keywatch.contract.events import Env
from keywatch.core.error_burst import ErrorBurstConfig
from keywatch.core.ip_baseline import IpBaselineConfig
from keywatch.core.rate_baseline import RateBaselineConfig
from keywatch.core.revoked_use import RevokedUseConfig

SECTIONS = ("ip", "rate", "errors", "revoked")


class EnvOverrides(BaseModel):
    """Settings that differ in one environment: per detector, only the fields to change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ip: dict[str, Any] = Field(default_factory=dict)
    rate: dict[str, Any] = Field(default_factory=dict)
    errors: dict[str, Any] = Field(default_factory=dict)
    revoked: dict[str, Any] = Field(default_factory=dict)
    max_suppressions: int | None = Field(default=None, ge=1, le=4096)

    def is_empty(self) -> bool:
        """True when nothing is overridden."""
        return not any(getattr(self, name) for name in SECTIONS) and self.max_suppressions is None


class DetectionConfig(BaseModel):
    """All detector settings, with optional per-environment overrides (`live`, `sandbox`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ip: IpBaselineConfig = Field(default_factory=IpBaselineConfig, description="apiKey.usedFromNewIp")
    rate: RateBaselineConfig = Field(default_factory=RateBaselineConfig, description="apiKey.requestSpike")
    errors: ErrorBurstConfig = Field(default_factory=ErrorBurstConfig, description="apiKey.4xxCluster")
    revoked: RevokedUseConfig = Field(default_factory=RevokedUseConfig, description="apiKey.usedAfterRevoke")
    max_suppressions: int = Field(default=64, ge=1, le=4096, description="Suppression entries kept per key.")
    live: EnvOverrides = Field(default_factory=EnvOverrides)
    sandbox: EnvOverrides = Field(default_factory=EnvOverrides)

    @model_validator(mode="after")
    def _check_overrides(self) -> DetectionConfig:
        envs: tuple[Env, ...] = ("live", "sandbox")
        for env in envs:
            try:
                self.for_env(env)
            except ValidationError as exc:
                raise ValueError(_describe(exc, prefix=f"{env}.")) from None
        return self

    def for_env(self, env: Env) -> DetectionConfig:
        """The settings that apply to keys of `env`, overrides applied (without further overrides)."""
        overrides: EnvOverrides = getattr(self, env)
        if overrides.is_empty():
            return self.model_copy(update={"live": EnvOverrides(), "sandbox": EnvOverrides()})
        data: dict[str, Any] = {}
        for name in SECTIONS:
            section: BaseModel = getattr(self, name)
            data[name] = {**section.model_dump(), **getattr(overrides, name)}
        data["max_suppressions"] = overrides.max_suppressions or self.max_suppressions
        return DetectionConfig.model_validate(data)


def _describe(exc: ValidationError, *, prefix: str = "") -> str:
    """One line per problem, each naming the setting by its dotted path and showing the bad value."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        shown = "" if error["type"] in ("extra_forbidden", "value_error") else f" (got {error.get('input')!r})"
        lines.append(f"{prefix}{where}: {message}{shown}" if where else message)
    return "; ".join(lines)


def detection_config_from_mapping(data: dict[str, Any] | None) -> DetectionConfig:
    """Validate the contents of a `[detection]` section; raise ConfigError naming each bad setting."""
    try:
        return DetectionConfig.model_validate(data or {})
    except ValidationError as exc:
        detail = _describe(exc)
        raise ConfigError("; ".join(f"detection.{part}" for part in detail.split("; "))) from None


def load_detection_config(path: str | Path | None) -> DetectionConfig:
    """Read the `[detection]` section of a TOML file (defaults for everything when absent or no file)."""
    if path is None:
        return DetectionConfig()
    path = Path(path)
    section = read_table(path, "detection")
    try:
        return detection_config_from_mapping(section)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
