"""The plugin's hooks, its entry point and its ``[cloud]`` settings section."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from cloud_helpers import FAKE_KEY
from pydantic import ValidationError
from resayil_cloud import plugin
from resayil_cloud.backend import CloudBackend
from resayil_cloud.settings import CloudSettings

from resayil_gateway.bootstrap import gateway_from_config
from resayil_gateway.config import ConfigError, load_settings
from resayil_gateway.plugins import DEFAULT_PLUGINS, make_plugin_manager

SECTIONS = {"cloud": CloudSettings}


def gateway_with(settings: CloudSettings) -> SimpleNamespace:
    return SimpleNamespace(settings=SimpleNamespace(section=lambda name: {"cloud": settings}[name]))


def registered(settings: CloudSettings) -> list:
    backends: list = []
    plugin.register_backends(register=backends.append, gateway=gateway_with(settings))
    return backends


def test_entry_point_is_installed():
    (entry,) = [e for e in entry_points(group="resayil_gateway") if e.name == "cloud"]
    assert entry.value == "resayil_cloud.plugin"


def test_plugin_manager_loads_the_plugin_from_its_entry_point():
    pm = make_plugin_manager(env={"RESAYIL_LOAD_PLUGINS": "cloud"}, blocked=DEFAULT_PLUGINS)
    assert pm.get_plugin("cloud") is plugin


def test_gateway_built_from_entry_points_registers_the_cloud_backend_when_a_key_is_set(tmp_path: Path):
    env = {
        "RESAYIL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'resayil.db'}",
        "RESAYIL_CLOUD__API_KEY": FAKE_KEY,
        "RESAYIL_CLOUD__MAX_CONCURRENCY": "3",
    }
    gateway = gateway_from_config(env=env, blocked=("hello",))
    backend = gateway.backends["cloud"]
    assert isinstance(backend, CloudBackend)
    assert (backend.kind, backend.max_concurrency, backend.daily_request_budget) == ("cloud", 3, 500)


def test_gateway_without_a_key_has_no_cloud_backend(tmp_path: Path):
    env = {"RESAYIL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'resayil.db'}"}
    gateway = gateway_from_config(env=env, blocked=("hello",))
    assert "cloud" not in gateway.backends


def test_register_settings_declares_the_cloud_section():
    found = {}
    plugin.register_settings(register=found.__setitem__)
    assert found == {"cloud": CloudSettings}


def test_backend_is_registered_when_a_key_is_set_and_enabled_is_left_unset():
    (backend,) = registered(CloudSettings(api_key=FAKE_KEY, max_concurrency=2))
    assert (backend.name, backend.max_concurrency) == ("cloud", 2)


def test_no_backend_without_a_key_unless_enabled_for_a_local_url():
    assert registered(CloudSettings()) == []
    assert registered(CloudSettings(enabled=False, api_key=FAKE_KEY)) == []
    (backend,) = registered(CloudSettings(enabled=True, url="http://127.0.0.1:11435"))
    assert backend.kind == "cloud"


def test_register_commands_adds_the_simulator_command():
    cli = click.Group("resayil")
    plugin.register_commands(cli=cli)
    assert "cloud-simulator" in cli.commands


# settings -----------------------------------------------------------------------------------------------------


def test_settings_defaults_match_the_reference_configuration():
    settings = CloudSettings()
    assert settings.url == "https://ollama.com"
    assert (settings.max_concurrency, settings.daily_request_budget) == (16, 500)
    assert settings.budget_alert_ratios == (0.8, 1.0)
    assert (settings.dialect, settings.enabled, settings.active) == ("ollama", None, False)


def test_enabled_without_a_key_for_a_remote_url_is_a_one_line_error_naming_the_key():
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"RESAYIL_CLOUD__ENABLED": "true"}, plugin_sections=SECTIONS)
    message = str(caught.value)
    assert message.startswith("cloud.api_key: required")
    assert "\n" not in message


def test_the_key_is_read_from_the_environment_and_never_shown():
    settings = load_settings(env={"RESAYIL_CLOUD__API_KEY": FAKE_KEY}, plugin_sections=SECTIONS).section("cloud")
    assert settings.api_key.get_secret_value() == FAKE_KEY
    assert settings.active is True
    assert FAKE_KEY not in repr(settings) and FAKE_KEY not in str(settings.model_dump())


def test_a_bad_value_beside_the_key_does_not_echo_the_key():
    env = {"RESAYIL_CLOUD__API_KEY": FAKE_KEY, "RESAYIL_CLOUD__MAX_CONCURRENCY": "0"}
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env, plugin_sections=SECTIONS)
    assert str(caught.value).startswith("cloud.max_concurrency:")
    assert FAKE_KEY not in str(caught.value)


@pytest.mark.parametrize("ratios", ["[1.0, 0.8]", "[0.8, 0.8]", "[0, 1.0]", "[0.5, 1.2]"])
def test_budget_alert_ratios_must_ascend_within_zero_to_one(ratios):
    with pytest.raises(ConfigError, match=r"cloud\.budget_alert_ratios"):
        load_settings(env={"RESAYIL_CLOUD__BUDGET_ALERT_RATIOS": ratios}, plugin_sections=SECTIONS)


def test_budget_settings_load_from_the_environment():
    env = {"RESAYIL_CLOUD__DAILY_REQUEST_BUDGET": "40", "RESAYIL_CLOUD__BUDGET_ALERT_RATIOS": "[0.5, 0.9, 1.0]"}
    settings = load_settings(env=env, plugin_sections=SECTIONS).section("cloud")
    assert (settings.daily_request_budget, settings.budget_alert_ratios) == (40, (0.5, 0.9, 1.0))


def test_url_must_be_http_and_loses_a_trailing_slash_and_v1():
    assert CloudSettings(url="https://api.example.com/v1/").url == "https://api.example.com"
    with pytest.raises(ValidationError):
        CloudSettings(url="ftp://api.example.com")


def test_dialect_is_ollama_or_openai():
    assert CloudSettings(dialect="openai").dialect == "openai"
    with pytest.raises(ConfigError, match=r"cloud\.dialect"):
        load_settings(env={"RESAYIL_CLOUD__DIALECT": "anthropic"}, plugin_sections=SECTIONS)


def test_unknown_settings_key_is_refused_by_the_core():
    with pytest.raises(ConfigError, match=r"cloud\.colour"):
        load_settings(env={"RESAYIL_CLOUD__COLOUR": "red"}, plugin_sections=SECTIONS)
