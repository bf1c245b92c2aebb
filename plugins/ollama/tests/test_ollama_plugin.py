"""The plugin's hooks, its entry point and its settings section."""

from __future__ import annotations

from importlib.metadata import entry_points
from types import SimpleNamespace

import click
import pytest
from pydantic import ValidationError
from resayil_ollama import plugin
from resayil_ollama.backend import OllamaBackend
from resayil_ollama.settings import OllamaSettings

from resayil_gateway.config import ConfigError, load_settings
from resayil_gateway.plugins import DEFAULT_PLUGINS, make_plugin_manager


def gateway_with(settings: OllamaSettings) -> SimpleNamespace:
    return SimpleNamespace(settings=SimpleNamespace(section=lambda name: {"ollama": settings}[name]))


def test_entry_point_is_installed():
    (entry,) = [e for e in entry_points(group="resayil_gateway") if e.name == "ollama"]
    assert entry.value == "resayil_ollama.plugin"


def test_plugin_manager_loads_the_plugin_from_its_entry_point():
    pm = make_plugin_manager(env={"RESAYIL_LOAD_PLUGINS": "ollama"}, blocked=DEFAULT_PLUGINS)
    assert pm.get_plugin("ollama") is plugin


def test_register_settings_declares_the_ollama_section():
    registered = {}
    plugin.register_settings(register=registered.__setitem__)
    assert registered == {"ollama": OllamaSettings}


def test_register_backends_registers_one_backend_when_enabled():
    backends = []
    plugin.register_backends(register=backends.append, gateway=gateway_with(OllamaSettings(max_concurrency=2)))
    (backend,) = backends
    assert isinstance(backend, OllamaBackend)
    assert (backend.name, backend.max_concurrency) == ("ollama", 2)


def test_register_backends_registers_nothing_when_disabled():
    backends = []
    plugin.register_backends(register=backends.append, gateway=gateway_with(OllamaSettings(enabled=False)))
    assert backends == []


def test_register_commands_adds_the_simulator_command():
    cli = click.Group("resayil")
    plugin.register_commands(cli=cli)
    assert "ollama-simulator" in cli.commands


def test_settings_defaults():
    settings = OllamaSettings()
    assert settings.url == "http://127.0.0.1:11434"
    assert (settings.enabled, settings.discover, settings.max_concurrency) == (True, True, 1)
    assert (settings.first_token_timeout_s, settings.read_timeout_s, settings.connect_timeout_s) == (120, 120, 5)
    assert settings.keep_alive is None and settings.num_ctx is None


def test_settings_url_must_be_http_and_loses_its_trailing_slash():
    assert OllamaSettings(url="https://gpu.example:11434/").url == "https://gpu.example:11434"
    with pytest.raises(ValidationError):
        OllamaSettings(url="ftp://gpu.example")
    with pytest.raises(ValidationError):
        OllamaSettings(url="localhost:11434")


def test_settings_max_concurrency_is_at_least_one():
    with pytest.raises(ValidationError):
        OllamaSettings(max_concurrency=0)


def test_settings_load_from_the_environment_through_the_core():
    env = {"RESAYIL_OLLAMA__MAX_CONCURRENCY": "4", "RESAYIL_OLLAMA__URL": "http://gpu:11434"}
    settings = load_settings(env=env, plugin_sections={"ollama": OllamaSettings})
    section = settings.section("ollama")
    assert (section.max_concurrency, section.url) == (4, "http://gpu:11434")


def test_unknown_settings_key_is_refused_by_the_core():
    with pytest.raises(ConfigError, match=r"ollama\.colour"):
        load_settings(env={"RESAYIL_OLLAMA__COLOUR": "red"}, plugin_sections={"ollama": OllamaSettings})
