"""The plugin's hooks and its entry point: a gateway built from installed plugins gets the ``whatsapp`` channel."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from types import SimpleNamespace

import click
import pytest
from resayil_whatsapp import plugin
from resayil_whatsapp.channel import WhatsAppChannel
from resayil_whatsapp.meta_api import MetaCloudTransport
from resayil_whatsapp.resayil_api import ResayilTransport
from resayil_whatsapp.settings import WhatsAppSettings
from whatsapp_helpers import TOKEN

from resayil_gateway.config import ConfigError
from resayil_gateway.events.channels import Channel
from resayil_gateway.plugins import DEFAULT_PLUGINS, make_plugin_manager
from resayil_gateway.testing import build_gateway


def gateway_with(settings: WhatsAppSettings) -> SimpleNamespace:
    return SimpleNamespace(settings=SimpleNamespace(section=lambda name: {"whatsapp": settings}[name]))


def registered_channels(settings: WhatsAppSettings) -> list:
    channels: list = []
    plugin.register_channels(register=channels.append, gateway=gateway_with(settings))
    return channels


def test_entry_point_is_installed():
    (entry,) = [e for e in entry_points(group="resayil_gateway") if e.name == "whatsapp"]
    assert entry.value == "resayil_whatsapp.plugin"


def test_plugin_manager_loads_the_plugin_from_its_entry_point():
    pm = make_plugin_manager(env={"RESAYIL_LOAD_PLUGINS": "whatsapp"}, blocked=DEFAULT_PLUGINS)
    assert pm.get_plugin("whatsapp") is plugin


def test_register_settings_declares_the_whatsapp_section():
    registered = {}
    plugin.register_settings(register=registered.__setitem__)
    assert registered == {"whatsapp": WhatsAppSettings}


def test_a_token_registers_one_channel_named_whatsapp_with_the_admin_phones():
    (channel,) = registered_channels(WhatsAppSettings(token=TOKEN, admin_phones=["+96550000001"]))
    assert isinstance(channel, WhatsAppChannel) and isinstance(channel, Channel)
    assert channel.name == "whatsapp"
    assert channel.extra_admin_recipients == ("+96550000001",)
    assert isinstance(channel.transport, ResayilTransport)


def test_meta_transport_is_chosen_by_the_setting():
    settings = WhatsAppSettings(token=TOKEN, transport="meta", meta_phone_number_id="1065")
    (channel,) = registered_channels(settings)
    assert isinstance(channel.transport, MetaCloudTransport)
    assert channel.transport.url == "https://graph.facebook.com/v24.0/1065/messages"


def test_no_token_registers_nothing_quietly(caplog):
    caplog.set_level(logging.DEBUG)
    assert registered_channels(WhatsAppSettings()) == []
    assert caplog.text == ""  # a deployment without WhatsApp starts without noise


def test_disabled_registers_nothing_even_with_a_token():
    assert registered_channels(WhatsAppSettings(token=TOKEN, enabled=False)) == []


def test_register_commands_adds_the_sink_command():
    cli = click.Group("resayil")
    plugin.register_commands(cli=cli)
    assert "whatsapp-sink" in cli.commands


def test_gateway_built_from_entry_points_has_the_whatsapp_channel(tmp_path):
    env = {"RESAYIL_WHATSAPP__TOKEN": TOKEN, "RESAYIL_WHATSAPP__ADMIN_PHONES": '["+96550000001"]'}
    gateway = build_gateway(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", load_entrypoints=True, env=env)
    channel = gateway.channels["whatsapp"]
    assert isinstance(channel, WhatsAppChannel)
    assert channel.extra_admin_recipients == ("+96550000001",)
    assert gateway.settings.section("whatsapp").token.get_secret_value() == TOKEN


def test_gateway_refuses_to_start_when_enabled_without_a_token(tmp_path):
    with pytest.raises(ConfigError, match=r"^whatsapp\.token: "):
        build_gateway(
            f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
            load_entrypoints=True,
            env={"RESAYIL_WHATSAPP__ENABLED": "true"},
        )
