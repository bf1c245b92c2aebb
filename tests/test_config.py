"""Configuration: built-in defaults < TOML file (``--config`` / ``RESAYIL_CONFIG``) < ``RESAYIL_*`` environment.

Every problem is a :class:`ConfigError` with one line that names the key; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field, SecretStr
from resayil_ollama.settings import OllamaSettings

from resayil_gateway.config import ConfigError, Section, load_settings
from resayil_gateway.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_TOML = ROOT.parent / "shared" / "reference" / "resayil.example.toml"
RESAYIL = Path(sys.executable).with_name("resayil")
# Sections of the reference file whose plugins (cloud, MyFatoorah, WhatsApp) do not exist yet.
NOT_YET_REGISTERED = {"cloud", "myfatoorah", "whatsapp"}
OLLAMA = {"ollama": OllamaSettings}


def bundled_sections() -> dict[str, type]:
    """The settings sections every bundled plugin registers (Ollama, cloud, MyFatoorah, WhatsApp, portal)."""
    sections: dict[str, type] = {}
    make_plugin_manager(env={}).hook.register_settings(register=sections.__setitem__)
    return sections


class TokenSettings(Section):
    """A plugin section holding a secret, as payment and messaging plugins will."""

    api_token: SecretStr = Field(SecretStr(""), min_length=16)


def write(tmp_path: Path, text: str, name: str = "resayil.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs) -> str:
    """The message of the ConfigError that loading with ``kwargs`` raises (it must be one line)."""
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def without_sections(text: str, names: set[str]) -> str:
    """The TOML text with every table under the top-level ``names`` removed."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        header = re.match(r"\s*\[+\s*([A-Za-z0-9_-]+)", line)
        if header:
            skipping = header.group(1) in names
        if not skipping:
            kept.append(line)
    return "".join(kept)


def reference_text() -> str:
    if not REFERENCE_TOML.exists():
        pytest.skip(f"the shared reference configuration is not at {REFERENCE_TOML}")
    return REFERENCE_TOML.read_text(encoding="utf-8")


# -- defaults and precedence ------------------------------------------------------------------------------


def test_defaults_match_the_specification():
    settings = load_settings()
    assert settings.source is None
    assert settings.gateway.public_url == "http://127.0.0.1:8080"
    assert settings.gateway.database_url.startswith("sqlite+aiosqlite:///")
    assert (settings.gateway.redis_url, settings.gateway.timezone) == ("", "Asia/Kuwait")
    assert (settings.billing.currency, settings.billing.signup_credits, settings.billing.default_hold_tokens) == (
        "KWD",
        0,
        1024,
    )
    assert {
        pid: (p.price_fils, p.credits, p.requests_per_minute, p.max_api_keys) for pid, p in settings.plans.items()
    } == {
        "basic": (2500, 100, 10, 1),
        "pro": (7500, 500, 30, 3),
        "enterprise": (25000, 2000, 60, 10),
    }
    assert {pid: (p.credits, p.price_fils) for pid, p in settings.packs.items()} == {
        "5k": (5000, 5000),
        "15k": (15000, 12000),
        "50k": (50000, 35000),
    }
    assert (settings.routing.failover_queue_depth, settings.routing.max_queue_wait_s) == (3, 30)
    assert settings.models.restricted == ("glm-4.7-flash", "bge-m3", "nomic-embed-text")


def test_plugin_section_gets_its_defaults_when_the_file_does_not_mention_it():
    settings = load_settings(plugin_sections=OLLAMA)
    assert settings.section("ollama") == OllamaSettings()


def test_config_file_given_as_path_overrides_defaults(tmp_path):
    path = write(tmp_path, "[routing]\nfailover_queue_depth = 5\n[plans.pro]\ncredits = 600\n")
    settings = load_settings(path)
    assert settings.routing.failover_queue_depth == 5
    assert settings.plans["pro"].credits == 600
    assert settings.plans["pro"].price_fils == 7500
    assert settings.source == str(path)


def test_config_file_named_by_resayil_config_is_read(tmp_path):
    path = write(tmp_path, "[billing]\nsignup_credits = 7\n")
    settings = load_settings(env={"RESAYIL_CONFIG": str(path)})
    assert settings.billing.signup_credits == 7
    assert settings.source == str(path)


def test_config_path_argument_wins_over_resayil_config(tmp_path):
    chosen = write(tmp_path, "[billing]\nsignup_credits = 1\n", "chosen.toml")
    other = write(tmp_path, "[billing]\nsignup_credits = 2\n", "other.toml")
    assert load_settings(chosen, env={"RESAYIL_CONFIG": str(other)}).billing.signup_credits == 1


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "[routing]\nfailover_queue_depth = 5\nmax_queue_wait_s = 10\n")
    settings = load_settings(path, env={"RESAYIL_ROUTING__FAILOVER_QUEUE_DEPTH": "8"})
    assert settings.routing.failover_queue_depth == 8
    assert settings.routing.max_queue_wait_s == 10


def test_nested_environment_variable_sets_one_plan_key(tmp_path):
    path = write(tmp_path, "[plans.basic]\ncredits = 150\nprice_fils = 3000\n")
    settings = load_settings(path, env={"RESAYIL_PLANS__BASIC__CREDITS": "120"})
    assert settings.plans["basic"].credits == 120
    assert settings.plans["basic"].price_fils == 3000
    assert settings.plans["basic"].name.en == "Basic"


def test_environment_can_set_a_localized_name_three_levels_deep():
    settings = load_settings(env={"RESAYIL_PLANS__BASIC__NAME__EN": "Starter"})
    assert (settings.plans["basic"].name.en, settings.plans["basic"].name.ar) == ("Starter", "الأساسية")


def test_environment_json_list_replaces_a_list(tmp_path):
    path = write(tmp_path, '[models]\nrestricted = ["x", "y"]\n')
    settings = load_settings(path, env={"RESAYIL_MODELS__RESTRICTED": '["a"]'})
    assert settings.models.restricted == ("a",)


def test_environment_sets_plugin_sections_with_typed_values():
    env = {"RESAYIL_OLLAMA__DISCOVER": "false", "RESAYIL_OLLAMA__MAX_CONCURRENCY": "4"}
    section = load_settings(env=env, plugin_sections=OLLAMA).section("ollama")
    assert (section.discover, section.max_concurrency) == (False, 4)


def test_environment_variables_without_a_section_are_not_settings():
    env = {"RESAYIL_LOAD_PLUGINS": "ollama", "RESAYIL_TEST_STACKS": "sqlite", "HOME": "/root"}
    assert load_settings(env=env) == load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "key", "expected"),
    [
        ("RESAYIL_DATABASE_URL", "postgresql+asyncpg://db/resayil", "database_url", "postgresql+asyncpg://db/resayil"),
        ("RESAYIL_REDIS_URL", "redis://cache:6379/1", "redis_url", "redis://cache:6379/1"),
        ("RESAYIL_PUBLIC_URL", "https://api.resayil.io/", "public_url", "https://api.resayil.io"),
    ],
)
def test_short_alias_sets_its_gateway_key_over_the_file(tmp_path, variable, value, key, expected):
    path = write(tmp_path, '[gateway]\ndatabase_url = "sqlite+aiosqlite:///file.db"\npublic_url = "http://file"\n')
    settings = load_settings(path, env={variable: value})
    assert getattr(settings.gateway, key) == expected


def test_short_alias_sets_the_secret_key():
    settings = load_settings(env={"RESAYIL_SECRET_KEY": "a-secret-from-the-environment"})
    assert settings.gateway.secret_key.get_secret_value() == "a-secret-from-the-environment"


def test_postgresql_url_without_driver_gets_asyncpg():
    settings = load_settings(env={"RESAYIL_DATABASE_URL": "postgresql://db/resayil"})
    assert settings.gateway.database_url == "postgresql+asyncpg://db/resayil"


def test_short_alias_and_long_form_resolve_the_same_whatever_their_order():
    alias, long_form = (
        ("RESAYIL_SECRET_KEY", "alias-secret-value"),
        ("RESAYIL_GATEWAY__SECRET_KEY", "long-secret-value"),
    )
    one = load_settings(env=dict([alias, long_form])).gateway.secret_key.get_secret_value()
    other = load_settings(env=dict([long_form, alias])).gateway.secret_key.get_secret_value()
    assert one == other


def test_overrides_win_over_the_environment():
    settings = load_settings(env={"RESAYIL_BILLING__SIGNUP_CREDITS": "5"}, overrides={"billing": {"signup_credits": 9}})
    assert settings.billing.signup_credits == 9


# -- the reference configuration --------------------------------------------------------------------------


def test_reference_configuration_loads_once_unregistered_plugin_sections_are_removed(tmp_path):
    path = write(tmp_path, without_sections(reference_text(), NOT_YET_REGISTERED))
    settings = load_settings(path, plugin_sections=OLLAMA)
    assert settings.gateway.database_url == "sqlite+aiosqlite:///resayil.db"
    assert settings.billing.credit_warning_ratio == 0.20
    assert settings.plans["enterprise"].models == ("*",)
    assert settings.plans["enterprise"].priority == 10
    assert settings.plans["pro"].name.ar == "الاحترافية"
    assert settings.packs["15k"].price_fils == 12000
    assert settings.models.catalog["llama3.2:3b"].cloud_equivalent == "gpt-oss:20b"
    assert settings.models.catalog["gpt-oss:120b"].backend == "cloud"
    assert settings.section("ollama").max_concurrency == 1


def test_reference_configuration_as_is_names_the_first_unregistered_section(tmp_path):
    path = write(tmp_path, reference_text())
    assert config_error(path=path, plugin_sections=OLLAMA) == f"cloud: unknown section in {path}"


def test_the_whole_reference_configuration_loads_with_the_bundled_plugins(tmp_path):
    settings = load_settings(write(tmp_path, reference_text()), plugin_sections=bundled_sections())
    assert settings.section("cloud").daily_request_budget == 500
    assert tuple(settings.section("cloud").budget_alert_ratios) == (0.8, 1.0)
    assert settings.section("myfatoorah").reconcile_after_s == 600
    assert settings.section("whatsapp").transport == "resayil"


def test_repository_example_configuration_loads_with_the_bundled_plugins():
    settings = load_settings(ROOT / "examples" / "resayil.toml", plugin_sections=bundled_sections())
    assert settings.models.catalog["smollm2:135m"].size == "small"
    assert settings.section("ollama").url == "http://127.0.0.1:11434"


# -- errors: one line naming the key ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[plans.basic]\nprice_fils = -1\n",
            "plans.basic.price_fils: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            '[plans.basic]\nprice_fils = "a lot"\n',
            "plans.basic.price_fils: Input should be a valid integer, unable to parse string as an integer "
            "(got 'a lot')",
        ),
        ("[gateway]\nport = 70000\n", "gateway.port: Input should be less than or equal to 65535 (got 70000)"),
        ('[gateway]\ndefault_language = "fr"\n', "gateway.default_language: Input should be 'ar' or 'en' (got 'fr')"),
        ('[gateway]\npublic_url = "example.com"\n', "gateway.public_url: must be an absolute http(s) URL"),
        ('[gateway]\ndatabase_url = "mysql://db"\n', "gateway.database_url: must start with sqlite+aiosqlite://"),
        ('[models.catalog."m"]\nbackend = "moon"\n', "models.catalog.m.backend: Input should be 'local' or 'cloud'"),
        ('[gateway]\ncolour = "red"\n', "gateway.colour: unknown key"),
        ("[plans.gold]\ncredits = 5\n", "plans.gold.name: required key is missing"),
        ("gateway = 5\n", "gateway: expected a table, got int"),
        ("[plans]\nbasic = 5\n", "plans.basic: expected a table, got int"),
        ('[colour]\nhue = "red"\n', "colour: unknown section in"),
    ],
)
def test_bad_file_value_raises_one_line_naming_the_key(tmp_path, toml, expected):
    assert config_error(path=write(tmp_path, toml)).startswith(expected)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RESAYIL_PLANS__BASIC__PRICE_FILS": "cheap"}, "plans.basic.price_fils: Input should be a valid integer"),
        ({"RESAYIL_GATEWAY__PORT": "eighty"}, "gateway.port: Input should be a valid integer"),
        ({"RESAYIL_GATEWAY__COLOUR": "red"}, "gateway.colour: unknown key"),
        ({"RESAYIL_COLOUR__HUE": "red"}, "RESAYIL_COLOUR__HUE: unknown section [colour]"),
        ({"RESAYIL_MODELS__RESTRICTED": '["a"'}, "models.restricted: Input should be a valid tuple"),
        ({"RESAYIL_REDIS_URL": "localhost:6379"}, "gateway.redis_url: must be empty or start with redis://"),
        ({"RESAYIL_GATEWAY__TIMEZONE": "Mars/Olympus"}, "gateway.timezone: unknown time zone 'Mars/Olympus'"),
        ({"RESAYIL_OLLAMA__COLOUR": "red"}, "ollama.colour: unknown key"),
    ],
)
def test_bad_environment_value_raises_one_line_naming_the_key(env, expected):
    assert config_error(env=env, plugin_sections=OLLAMA).startswith(expected)


def test_invalid_toml_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, "[gateway\nport = 1\n")
    assert config_error(path=path) == (
        f"config file {path}: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 9)"
    )


def test_missing_config_file_is_named(tmp_path):
    path = tmp_path / "missing.toml"
    assert config_error(path=path) == f"config file {path}: not found"
    assert config_error(env={"RESAYIL_CONFIG": str(path)}) == f"config file {path}: not found"


def test_plugin_section_may_not_take_a_core_section_name():
    assert config_error(plugin_sections={"gateway": OllamaSettings}) == (
        "plugin section [gateway] clashes with a core section"
    )


@pytest.mark.parametrize("toml", ['plans = "basic"\n', "packs = 5\n"])
def test_plans_or_packs_that_are_not_tables_are_a_config_error(tmp_path, toml):
    message = config_error(path=write(tmp_path, toml))
    assert message.split(":")[0] in ("plans", "packs")


def test_config_path_that_is_a_directory_is_a_config_error(tmp_path):
    assert config_error(path=tmp_path).startswith(f"config file {tmp_path}:")


# -- secrets ----------------------------------------------------------------------------------------------


def test_secret_key_never_appears_in_the_settings_repr():
    settings = load_settings(env={"RESAYIL_SECRET_KEY": "the-server-secret-value"})
    assert "the-server-secret-value" not in repr(settings)
    assert "the-server-secret-value" not in str(settings)


def test_plugin_secret_never_appears_in_the_settings_repr():
    env = {"RESAYIL_TOKENS__API_TOKEN": "token-0123456789abcdef"}
    settings = load_settings(env=env, plugin_sections={"tokens": TokenSettings})
    assert settings.section("tokens").api_token.get_secret_value() == "token-0123456789abcdef"
    assert "token-0123456789abcdef" not in repr(settings)


def test_passwords_in_database_and_redis_urls_never_appear_in_the_settings_repr():
    env = {
        "RESAYIL_DATABASE_URL": "postgresql+asyncpg://resayil:db-password-1@db/resayil",
        "RESAYIL_REDIS_URL": "redis://:redis-password-2@cache:6379/0",
    }
    shown = repr(load_settings(env=env))
    assert "db-password-1" not in shown
    assert "redis-password-2" not in shown


def test_a_rejected_secret_is_not_echoed_in_the_error():
    message = config_error(env={"RESAYIL_TOKENS__API_TOKEN": "short-secret"}, plugin_sections={"tokens": TokenSettings})
    assert message.startswith("tokens.api_token:")
    assert "short-secret" not in message


# -- through the real command -----------------------------------------------------------------------------


def run_resayil(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("RESAYIL_")}
    return subprocess.run(
        [str(RESAYIL), *args], env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def test_serve_with_a_bad_config_file_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = write(tmp_path, '[plans.basic]\nprice_fils = "a lot"\n', "bad.toml")
    result = run_resayil("serve", "--config", str(path), env={})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: plans.basic.price_fils: Input should be a valid integer, unable to parse string as an integer "
        "(got 'a lot')"
    ]
    assert result.stdout == ""


def test_serve_with_a_bad_environment_variable_exits_2_with_one_line_and_no_traceback():
    result = run_resayil("serve", env={"RESAYIL_GATEWAY__PORT": "eighty"})
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: gateway.port: Input should be a valid integer")
