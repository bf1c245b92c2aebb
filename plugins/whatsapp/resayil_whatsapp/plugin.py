"""Hook implementations of the ``whatsapp`` plugin (entry point ``whatsapp = "resayil_whatsapp.plugin"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resayil_gateway import hookimpl

from .channel import WhatsAppChannel
from .settings import WhatsAppSettings
from .sink import sink_command

if TYPE_CHECKING:
    import click

SECTION = "whatsapp"


@hookimpl
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare the ``[whatsapp]`` settings section."""
    register(SECTION, WhatsAppSettings)


@hookimpl
def register_channels(register: Callable[[Any], None], gateway: Any) -> None:
    """Register the ``whatsapp`` channel when the section is active (enabled, or a token is set).

    Nothing is logged when it is not: the core knows best whether messages wait without any channel.
    """
    settings: WhatsAppSettings = gateway.settings.section(SECTION)
    if settings.active:
        register(WhatsAppChannel(settings))


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``resayil whatsapp-sink``: run the WhatsApp message sink in the foreground."""
    cli.add_command(sink_command)
