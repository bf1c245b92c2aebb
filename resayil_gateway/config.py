"""Typed settings: built-in defaults < TOML file (``--config`` / ``RESAYIL_CONFIG``) < ``RESAYIL_*`` environment.

The core owns ``[gateway]``, ``[billing]``, ``[plans.*]``, ``[packs.*]``, ``[routing]``, ``[models]`` and
``[limits]``, ``[notifications]``; each plugin declares its own section through the ``register_settings`` hook
with a pydantic model. Any key can be set from the environment as ``RESAYIL_<SECTION>__<KEY>`` ("__" between
levels); ``RESAYIL_DATABASE_URL``, ``RESAYIL_REDIS_URL``, ``RESAYIL_SECRET_KEY`` and ``RESAYIL_PUBLIC_URL`` are
short aliases. A bad value, a wrong type or an unknown key raises :class:`ConfigError`, whose one-line message
names the key.
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .logs import redact, remember_secrets

ENV_PREFIX = "RESAYIL_"
SHORT_ALIASES = {
    "RESAYIL_DATABASE_URL": ("gateway", "database_url"),
    "RESAYIL_REDIS_URL": ("gateway", "redis_url"),
    "RESAYIL_SECRET_KEY": ("gateway", "secret_key"),
    "RESAYIL_PUBLIC_URL": ("gateway", "public_url"),
}


class ConfigError(Exception):
    """A configuration problem, with a one-line message that names the key and what was expected."""


class Section(BaseModel):
    """Base for a settings section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(Section):
    """``[gateway]``: where the gateway lives and what it connects to."""

    public_url: str = "http://127.0.0.1:8080"
    database_url: str = Field("sqlite+aiosqlite:///var/resayil.db", repr=False)  # may carry a password
    redis_url: str = Field("", repr=False)
    redis_prefix: str = Field("resayil", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    timezone: str = "Asia/Kuwait"
    default_language: Literal["ar", "en"] = "ar"
    secret_key: SecretStr = SecretStr("")
    secret_key_file: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    auth_cache_ttl_s: float = Field(30.0, ge=0)
    shutdown_timeout_s: float = Field(30.0, ge=0)
    hold_lease_s: float = Field(120.0, ge=5)
    settle_batch_ms: float = Field(10.0, ge=0, le=1000)
    db_pool_size: int = Field(8, ge=2, le=200)
    db_hot_pool_size: int = Field(24, ge=1, le=500)
    session_remember_days: int = Field(30, ge=1, le=400)
    session_hours: int = Field(12, ge=1, le=24 * 30)
    # Slow clients (slow-loris): the whole request head, then the whole body, must arrive within these.
    header_read_timeout_s: float = Field(10.0, gt=0)
    body_read_timeout_s: float = Field(60.0, gt=0)
    keepalive_timeout_s: float = Field(75.0, gt=0)
    trusted_proxies: tuple[str, ...] = ()
    refuse_banned_ips: bool = False

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://", "postgresql://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value[len("postgresql://") :]
        try:
            url = make_url(value)
            url.port  # noqa: B018 - parsing is the check; its errors never quote the URL
        except (ArgumentError, ValueError):
            raise ValueError("is not a valid database URL (check the host, port and escaping)") from None
        if url.get_backend_name() == "sqlite" and (url.host or url.username or url.password):
            raise ValueError("an SQLite URL names only a file, as in sqlite+aiosqlite:///var/resayil.db")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be empty or start with redis://, rediss:// or unix://")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - parsing is the check
        except ValueError:
            raise ValueError("is not a valid Redis URL (check the host, port and escaping)") from None
        database = parts.path.strip("/") if parts.scheme != "unix" else ""
        if database and not database.isdigit():
            raise ValueError("the database after the host must be a number, as in redis://host:6379/0")
        return value


class BillingSettings(Section):
    """``[billing]``: currency, welcome credits and the hold used when a request names no ``max_tokens``."""

    currency: Literal["KWD"] = "KWD"
    signup_credits: int = Field(0, ge=0)
    default_hold_tokens: int = Field(1024, ge=1)
    credit_warning_ratio: float = Field(0.20, ge=0, le=1)


class NotificationsSettings(Section):
    """``[notifications]``: delivery retries and backoff, template overrides, the renewal reminder."""

    templates_dir: str = ""
    max_attempts: int = Field(6, ge=1, le=100)
    backoff_base_s: float = Field(30.0, gt=0)
    backoff_max_s: float = Field(3600.0, gt=0)
    lease_s: float = Field(120.0, ge=5)
    poll_interval_s: float = Field(5.0, gt=0)
    batch_size: int = Field(20, ge=1, le=1000)
    renewal_reminder_days: int = Field(3, ge=1, le=60)
    reminder_check_interval_s: float = Field(3600.0, gt=0)
    enterprise_plans: tuple[str, ...] = ("enterprise",)


class LocalizedName(Section):
    """A name in English and Arabic."""

    en: str
    ar: str


class PlanSettings(Section):
    """``[plans.<id>]``: price, period, credits, rate limit, key allowance, model access and priority."""

    name: LocalizedName
    price_fils: int = Field(ge=0)
    period_days: int = Field(30, ge=1)
    credits: int = Field(ge=0)
    requests_per_minute: int = Field(ge=1)
    max_api_keys: int = Field(ge=0)
    models: tuple[str, ...] = ("local:small", "local:medium")
    priority: int = 0


class PackSettings(Section):
    """``[packs.<id>]``: a top-up pack of credits that never expire."""

    credits: int = Field(ge=1)
    price_fils: int = Field(ge=1)


class RoutingSettings(Section):
    """``[routing]``: when to fail over and how long a request may wait for capacity."""

    failover_queue_depth: int = Field(3, ge=0)
    max_queue_wait_s: float = Field(30.0, gt=0)
    queue_lease_s: float = Field(10.0, gt=0)  # a dead worker's queue slots are freed after this


class LimitsSettings(Section):
    """``[limits]``: what the per-account rate limit (each plan's ``requests_per_minute``) does when Redis
    cannot be reached or does not answer within ``redis_timeout_s``: ``open`` limits each worker on its own,
    ``closed`` answers 503."""

    on_redis_error: Literal["open", "closed"] = "open"
    # a hung Redis must not hang the request (Annotated: the default stays visible where the section is a default)
    redis_timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.25


class CatalogEntry(Section):
    """``[models.catalog."<id>"]``: one model's backend kind, size class, multiplier and cloud equivalent."""

    backend: Literal["local", "cloud"] = "local"
    size: Literal["small", "medium", "large"] = "medium"
    multiplier: float | None = Field(None, gt=0)
    cloud_equivalent: str | None = None
    upstream_name: str | None = None
    capabilities: tuple[str, ...] = ("chat",)


class ModelsSettings(Section):
    """``[models]``: the restricted list, default multipliers and the catalog."""

    restricted: tuple[str, ...] = ("glm-4.7-flash", "bge-m3", "nomic-embed-text")
    local_multiplier: float = Field(1.0, gt=0)
    cloud_multiplier: float = Field(2.0, gt=0)
    catalog: dict[str, CatalogEntry] = Field(default_factory=dict)


DEFAULT_PLANS: dict[str, dict[str, Any]] = {
    "basic": {
        "name": {"en": "Basic", "ar": "الأساسية"},
        "price_fils": 2500,
        "period_days": 30,
        "credits": 100,
        "requests_per_minute": 10,
        "max_api_keys": 1,
        "models": ["local:small", "local:medium"],
        "priority": 0,
    },
    "pro": {
        "name": {"en": "Pro", "ar": "الاحترافية"},
        "price_fils": 7500,
        "period_days": 30,
        "credits": 500,
        "requests_per_minute": 30,
        "max_api_keys": 3,
        "models": ["local:*", "cloud:*"],
        "priority": 0,
    },
    "enterprise": {
        "name": {"en": "Enterprise", "ar": "المؤسسات"},
        "price_fils": 25000,
        "period_days": 30,
        "credits": 2000,
        "requests_per_minute": 60,
        "max_api_keys": 10,
        "models": ["*"],
        "priority": 10,
    },
}
DEFAULT_PACKS: dict[str, dict[str, Any]] = {
    "5k": {"credits": 5000, "price_fils": 5000},
    "15k": {"credits": 15000, "price_fils": 12000},
    "50k": {"credits": 50000, "price_fils": 35000},
}
DEFAULT_PLAN = "basic"

CORE_SECTIONS: dict[str, type[Section]] = {
    "gateway": GatewaySettings,
    "billing": BillingSettings,
    "routing": RoutingSettings,
    "models": ModelsSettings,
    "limits": LimitsSettings,
    "notifications": NotificationsSettings,
}


@dataclass(frozen=True)
class Settings:
    """Every section, validated. Plugin sections are read with :meth:`section`."""

    gateway: GatewaySettings
    billing: BillingSettings
    routing: RoutingSettings
    models: ModelsSettings
    notifications: NotificationsSettings
    plans: Mapping[str, PlanSettings]
    packs: Mapping[str, PackSettings]
    plugin_sections: Mapping[str, Section] = field(default_factory=dict)
    source: str | None = None
    limits: LimitsSettings = field(default_factory=LimitsSettings)

    def section(self, name: str) -> Any:
        """A plugin's settings section by name (as it registered it); ``KeyError`` if none was."""
        return self.plugin_sections[name]

    def plan(self, plan_id: str) -> PlanSettings:
        """A plan's settings; an unknown id falls back to the default plan's rules."""
        return self.plans.get(plan_id) or self.plans[DEFAULT_PLAN]


SettingsRegistrar = Callable[[str, type[Section]], None]


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    plugin_sections: Mapping[str, type[Section]] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load and validate settings from defaults, an optional TOML file, the environment and ``overrides``.

    ``plugin_sections`` maps a section name to the pydantic model a plugin registered for it. ``overrides``
    (a nested mapping) wins over everything; tests use it. Raises :class:`ConfigError` on any problem.
    """
    env = env if env is not None else {}
    plugin_sections = dict(plugin_sections or {})
    known = set(CORE_SECTIONS) | {"plans", "packs"} | set(plugin_sections)
    for name in plugin_sections:
        if name in CORE_SECTIONS or name in {"plans", "packs"}:
            raise ConfigError(f"plugin section [{name}] clashes with a core section")

    raw: dict[str, Any] = {"plans": _copy(DEFAULT_PLANS), "packs": _copy(DEFAULT_PACKS)}
    file_path = path or env.get("RESAYIL_CONFIG") or None
    if file_path:
        _deep_merge(raw, _read_toml(Path(file_path)), known, origin=str(file_path))
    _deep_merge(raw, _environment_values(env, known), known, origin="environment")
    if overrides:
        _deep_merge(raw, _copy(dict(overrides)), known, origin="overrides")

    sections: dict[str, Any] = {}
    for name, model in CORE_SECTIONS.items():
        sections[name] = _validate(model, raw.get(name, {}), name)
    for name in ("plans", "packs"):
        if not isinstance(raw[name], dict):
            raise ConfigError(f"{name}: expected a table of tables, got {type(raw[name]).__name__}")
    plans = {pid: _validate(PlanSettings, body, f"plans.{pid}") for pid, body in raw["plans"].items()}
    if DEFAULT_PLAN not in plans:
        raise ConfigError(f"plans.{DEFAULT_PLAN}: the default plan must exist")
    packs = {pid: _validate(PackSettings, body, f"packs.{pid}") for pid, body in raw["packs"].items()}
    plugins = {name: _validate(model, raw.get(name, {}), name) for name, model in plugin_sections.items()}
    remember_secrets(secret_values([*sections.values(), *plugins.values()]))
    return Settings(
        plans=plans,
        packs=packs,
        plugin_sections=plugins,
        source=str(file_path) if file_path else None,
        **sections,
    )


def _validate(model: type[Section], body: Any, where: str) -> Any:
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a table, got {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join([where, *(str(part) for part in first["loc"])])
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"{key}: unknown key") from None
        if first["type"] == "missing":
            raise ConfigError(f"{key}: required key is missing") from None
        given = first.get("input")
        field = model.model_fields.get(str(first["loc"][0])) if first["loc"] else None
        secret = field is not None and "SecretStr" in str(field.annotation)
        shown = "" if isinstance(given, dict) or secret else f" (got {redact(repr(given))})"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{key}: {message}{shown}") from None


def secret_values(value: Any) -> list[str]:
    """Every secret a settings object holds: ``SecretStr`` values and passwords inside URLs, at any depth."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, str):
        return _url_password(value)
    if isinstance(value, BaseModel):
        return [secret for name in type(value).model_fields for secret in secret_values(getattr(value, name))]
    if isinstance(value, Mapping):
        return [secret for item in value.values() for secret in secret_values(item)]
    if isinstance(value, tuple | list):
        return [secret for item in value for secret in secret_values(item)]
    return []


def _url_password(value: str) -> list[str]:
    if "://" not in value or "@" not in value:
        return []
    try:
        password = urlsplit(value).password
    except ValueError:
        return []
    return [unquote(password), password] if password else []


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None


def _environment_values(env: Mapping[str, str], known: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, (section, key) in SHORT_ALIASES.items():  # first, so the long form wins when both are set
        if name in env:
            values.setdefault(section, {})[key] = env[name]
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if parts[0] not in known:
            raise ConfigError(f"{name}: unknown section [{parts[0]}]")
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_env_value(text)
    return values


def _parse_env_value(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    return text


def _deep_merge(target: dict[str, Any], incoming: Mapping[str, Any], known: set[str], origin: str) -> None:
    for key, value in incoming.items():
        if key not in known:
            raise ConfigError(f"{key}: unknown section in {origin}")
        _merge_into(target, key, value)


def _merge_into(target: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, Mapping) and isinstance(target.get(key), dict):
        for sub_key, sub_value in value.items():
            _merge_into(target[key], sub_key, sub_value)
    else:
        target[key] = _copy(value)


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
