"""Hook implementations of the ``cloud`` plugin (entry point ``cloud = "resayil_cloud.plugin"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resayil_gateway import hookimpl

from .backend import CloudBackend
from .settings import CloudSettings
from .simulator import simulator_command

if TYPE_CHECKING:
    import click

SECTION = "cloud"


@hookimpl
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare the ``[cloud]`` settings section."""
    register(SECTION, CloudSettings)


@hookimpl
def register_backends(register: Callable[[Any], None], gateway: Any) -> None:
    """Register one :class:`CloudBackend` when the section is active (``enabled``, or unset with an api_key)."""
    settings: CloudSettings = gateway.settings.section(SECTION)
    if settings.active:
        register(CloudBackend(settings))


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``resayil cloud-simulator``: run a cloud simulator in the foreground."""
    cli.add_command(simulator_command)
