"""The plugin's hooks, its entry point and its settings section."""

from __future__ import annotations

from importlib.metadata import entry_points
from types import SimpleNamespace

import click
import pytest
from myfatoorah_helpers import TOKEN
from pydantic import ValidationError
from resayil_myfatoorah import plugin
from resayil_myfatoorah.provider import MyFatoorahProvider
from resayil_myfatoorah.settings import MyFatoorahSettings

from resayil_gateway.clock import Clock
from resayil_gateway.config import ConfigError, load_settings
from resayil_gateway.plugins import DEFAULT_PLUGINS, make_plugin_manager
from resayil_gateway.testing import build_gateway


def gateway_with(settings: MyFatoorahSettings) -> SimpleNamespace:
    sections = {"myfatoorah": settings}
    return SimpleNamespace(settings=SimpleNamespace(section=sections.__getitem__), clock=Clock())


def registered(settings: MyFatoorahSettings) -> list:
    providers: list = []
    plugin.register_payment_providers(register=providers.append, gateway=gateway_with(settings))
    return providers


def test_entry_point_is_installed():
    (entry,) = [e for e in entry_points(group="resayil_gateway") if e.name == "myfatoorah"]
    assert entry.value == "resayil_myfatoorah.plugin"


def test_plugin_manager_loads_the_plugin_from_its_entry_point():
    pm = make_plugin_manager(env={"RESAYIL_LOAD_PLUGINS": "myfatoorah"}, blocked=DEFAULT_PLUGINS)
    assert pm.get_plugin("myfatoorah") is plugin


def test_register_settings_declares_the_myfatoorah_section():
    sections: dict = {}
    plugin.register_settings(register=sections.__setitem__)
    assert sections == {"myfatoorah": MyFatoorahSettings}


def test_enabled_provider_is_registered_under_its_name():
    (provider,) = registered(MyFatoorahSettings(enabled=True, api_token=TOKEN))
    assert isinstance(provider, MyFatoorahProvider)
    assert (provider.name, provider.reconcile_after_s) == ("myfatoorah", 600)


def test_disabled_provider_is_not_registered():
    assert registered(MyFatoorahSettings(enabled=False, api_token=TOKEN)) == []


def test_enabled_without_a_token_for_a_real_host_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"^myfatoorah\.api_token: required") as raised:
        registered(MyFatoorahSettings(enabled=True))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8091", "http://localhost:8091", "http://[::1]:8091"])
def test_enabled_without_a_token_is_fine_for_a_simulator_on_this_machine(url):
    assert len(registered(MyFatoorahSettings(enabled=True, base_url=url))) == 1


def test_register_commands_adds_the_simulator_command():
    cli = click.Group("resayil")
    plugin.register_commands(cli=cli)
    assert "myfatoorah-simulator" in cli.commands


def test_settings_defaults_match_the_example_config():
    settings = MyFatoorahSettings()
    assert settings.base_url == "https://apitest.myfatoorah.com"
    assert settings.api_token.get_secret_value() == settings.webhook_secret.get_secret_value() == ""
    assert (settings.enabled, settings.reconcile_after_s, settings.webhook_version) == (False, 600, "v2")


def test_secrets_never_show_in_the_settings_repr():
    settings = MyFatoorahSettings(api_token=TOKEN, webhook_secret="whsec")
    assert TOKEN not in repr(settings) and "whsec" not in repr(settings)


def test_base_url_must_be_http_and_loses_its_trailing_slash():
    assert MyFatoorahSettings(base_url="https://api.myfatoorah.com/").base_url == "https://api.myfatoorah.com"
    with pytest.raises(ValidationError):
        MyFatoorahSettings(base_url="api.myfatoorah.com")


def test_settings_load_from_the_environment_through_the_core():
    env = {
        "RESAYIL_MYFATOORAH__ENABLED": "true",
        "RESAYIL_MYFATOORAH__API_TOKEN": TOKEN,
        "RESAYIL_MYFATOORAH__WEBHOOK_SECRET": "whsec",
        "RESAYIL_MYFATOORAH__WEBHOOK_MAX_AGE_S": "120",
    }
    settings = load_settings(env=env, plugin_sections={"myfatoorah": MyFatoorahSettings}).section("myfatoorah")
    assert settings.enabled and settings.api_token.get_secret_value() == TOKEN
    assert (settings.webhook_secret.get_secret_value(), settings.webhook_max_age_s) == ("whsec", 120)


def test_unknown_or_bad_settings_are_refused_by_the_core_naming_the_key():
    sections = {"myfatoorah": MyFatoorahSettings}
    with pytest.raises(ConfigError, match=r"myfatoorah\.colour: unknown key"):
        load_settings(overrides={"myfatoorah": {"colour": "red"}}, plugin_sections=sections)
    with pytest.raises(ConfigError, match=r"myfatoorah\.webhook_version"):
        load_settings(overrides={"myfatoorah": {"webhook_version": "v3"}}, plugin_sections=sections)


def test_a_gateway_built_with_the_plugin_has_the_provider(tmp_path):
    database = f"sqlite+aiosqlite:///{tmp_path}/resayil.db"
    enabled = {"myfatoorah": {"enabled": True, "api_token": TOKEN}}
    gateway = build_gateway(database, plugins=[plugin], overrides=enabled)
    assert isinstance(gateway.payment_providers["myfatoorah"], MyFatoorahProvider)
    assert gateway.payment_providers["myfatoorah"].clock is gateway.clock
    with pytest.raises(ConfigError, match=r"myfatoorah\.api_token"):
        build_gateway(database, plugins=[plugin], overrides={"myfatoorah": {"enabled": True}})
