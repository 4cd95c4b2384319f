"""Detection settings: one validated, frozen config, loadable from the `[detection]` TOML section.

    [detection.rate]
    min_per_minute = 100
    [detection.sandbox.rate]      # per-environment overrides, only the settings that differ
    enabled = false
    [detection.tenant.acme.ip]    # per-tenant overrides (over the environment's), only what differs
    fanout_networks = 5
    [detection.trusted.tenant.acme]
    ci-runners = ["198.51.100.0/26"]
    [detection.roles]             # role -> rank, for the rules comparing roles (keywatch.core.roles)
    billing_admin = 3

Precedence: defaults < `[detection.<detector>]` < `[detection.<env>.<detector>]` < `[detection.tenant.<tenant>.
<detector>]`. Trusted networks: `keywatch.core.trusted`.

The model is built from the registered detector specs (`keywatch.core.catalog`): one section per detector,
named like the detector, holding its settings model. Every setting has a documented default (see
docs/alerts.md); a bad one is reported by its full name, e.g.
`detection.live.rate.min_ratio: Input should be greater than or equal to 1 (got 0.5)`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from keywatch.config import ConfigError, read_table
from keywatch.contract.events import Env
from keywatch.core import catalog
from keywatch.core.roles import MAX_ROLE_LENGTH, MAX_ROLES
from keywatch.core.spec import DetectorSpec
from keywatch.core.trusted import TrustedConfig

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def sections() -> tuple[str, ...]:
    """The `[detection.<name>]` sections of the registered detectors, in the order they run."""
    return tuple(spec.name for spec in catalog.specs())


class EnvOverrides(BaseModel):
    """Settings that differ in one environment: per detector, only the fields to change (one dict field per
    detector, added by `config_model`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    specs: ClassVar[tuple[DetectorSpec[Any, Any], ...]] = ()

    max_suppressions: int | None = Field(default=None, ge=1, le=4096)

    def overrides(self, name: str) -> dict[str, Any]:
        """The overridden settings of detector `name`."""
        found: dict[str, Any] = getattr(self, name)
        return found

    def is_empty(self) -> bool:
        """True when nothing is overridden."""
        return not any(self.overrides(spec.name) for spec in self.specs) and self.max_suppressions is None


class DetectionConfig(BaseModel):
    """All detector settings (one section per registered detector, added by `config_model`), with optional
    per-environment overrides (`live`, `sandbox`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    specs: ClassVar[tuple[DetectorSpec[Any, Any], ...]] = ()

    max_suppressions: int = Field(default=64, ge=1, le=4096, description="Suppression entries kept per key.")
    allowed_lateness_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="Ticks (event-time timers) fire once the newest event time seen is this far past them.",
    )
    live: EnvOverrides = Field(default_factory=EnvOverrides)
    sandbox: EnvOverrides = Field(default_factory=EnvOverrides)
    tenant: dict[str, EnvOverrides] = Field(default_factory=dict, max_length=10_000)
    trusted: TrustedConfig = Field(default_factory=TrustedConfig)
    roles: dict[
        Annotated[str, Field(min_length=1, max_length=MAX_ROLE_LENGTH)],
        Annotated[int, Field(strict=True, ge=0, le=100)],
    ] = Field(
        default_factory=dict,
        max_length=MAX_ROLES,
        description="Role -> rank (0-100, higher = more privilege); other roles rank by name (keywatch.core.roles).",
    )

    @field_validator("roles")
    @classmethod
    def _distinct_roles(cls, roles: dict[str, int]) -> dict[str, int]:
        seen: dict[str, str] = {}
        for name in roles:
            other = seen.setdefault(name.lower(), name)
            if other != name:
                raise ValueError(f"roles {other!r} and {name!r} differ only in case (roles match case-insensitively)")
        return roles

    def role_table(self) -> tuple[tuple[str, int], ...]:
        """`[detection.roles]` as pairs, for `BuildContext.roles`."""
        return tuple(sorted(self.roles.items()))

    def settings(self, spec: DetectorSpec[ConfigT, Any]) -> ConfigT:
        """The settings of one detector."""
        return cast(ConfigT, getattr(self, spec.name))

    def section(self, name: str) -> BaseModel:
        """The settings of the detector called `name`."""
        return cast(BaseModel, getattr(self, name))

    @model_validator(mode="after")
    def _check_overrides(self) -> DetectionConfig:
        envs: tuple[Env, ...] = ("live", "sandbox")
        for env in envs:
            try:
                self.for_env(env)
            except ValidationError as exc:
                raise ValueError(_describe(exc, prefix=f"{env}.")) from None
        for tenant in self.tenant:
            for env in envs:
                try:
                    self.for_tenant(tenant, env)
                except ValidationError as exc:
                    raise ValueError(_describe(exc, prefix=f"tenant.{tenant}.")) from None
        return self

    def for_env(self, env: Env) -> DetectionConfig:
        """The settings that apply to keys of `env`, overrides applied (without further overrides)."""
        return self.with_overrides(getattr(self, env))

    def for_tenant(self, tenant: str, env: Env) -> DetectionConfig:
        """The settings that apply to keys of `tenant` in `env`: the environment's, then the tenant's overrides."""
        base = self.for_env(env)
        overrides = self.tenant.get(tenant)
        return base if overrides is None else base.with_overrides(overrides)

    def with_overrides(self, overrides: EnvOverrides) -> DetectionConfig:
        """These settings with `overrides` applied, without any overrides left (trusted lists kept)."""
        empty = type(overrides)()
        if overrides.is_empty():
            return self.model_copy(update={"live": empty, "sandbox": empty, "tenant": {}})
        data: dict[str, Any] = {}
        for spec in self.specs:
            data[spec.name] = {**self.section(spec.name).model_dump(), **overrides.overrides(spec.name)}
        data["max_suppressions"] = overrides.max_suppressions or self.max_suppressions
        data["allowed_lateness_seconds"] = self.allowed_lateness_seconds
        data["trusted"] = self.trusted
        data["roles"] = self.roles
        return type(self).model_validate(data)


@functools.cache
def config_model(specs: tuple[DetectorSpec[Any, Any], ...]) -> type[DetectionConfig]:
    """The `[detection]` model for these detectors: a section per detector, overrides per environment."""
    overrides_fields: dict[str, Any] = {spec.name: (dict[str, Any], Field(default_factory=dict)) for spec in specs}
    overrides = create_model("EnvOverrides", __base__=EnvOverrides, **overrides_fields)
    overrides.specs = specs
    fields: dict[str, Any] = {
        spec.name: (spec.config, Field(default_factory=spec.config, description=spec.summary)) for spec in specs
    }
    fields["live"] = (overrides, Field(default_factory=overrides))
    fields["sandbox"] = (overrides, Field(default_factory=overrides))
    fields["tenant"] = (dict[str, overrides], Field(default_factory=dict, max_length=10_000))
    model = create_model("DetectionConfig", __base__=DetectionConfig, **fields)
    model.specs = specs
    return model


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
    """Validate the contents of a `[detection]` section (for the registered detectors); raise ConfigError
    naming each bad setting."""
    try:
        return config_model(catalog.specs()).model_validate(data or {})
    except ValidationError as exc:
        detail = _describe(exc)
        raise ConfigError("; ".join(f"detection.{part}" for part in detail.split("; "))) from None


def default_detection_config() -> DetectionConfig:
    """Every setting at its default."""
    return detection_config_from_mapping(None)


def load_detection_config(path: str | Path | None) -> DetectionConfig:
    """Read the `[detection]` section of a TOML file (defaults for everything when absent or no file)."""
    if path is None:
        return default_detection_config()
    path = Path(path)
    section = read_table(path, "detection")
    try:
        return detection_config_from_mapping(section)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
