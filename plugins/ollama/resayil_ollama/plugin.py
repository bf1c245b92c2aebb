"""Hook implementations of the ``ollama`` plugin (entry point ``ollama = "resayil_ollama.plugin"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resayil_gateway import hookimpl

from .backend import OllamaBackend
from .settings import OllamaSettings
from .simulator import simulator_command

if TYPE_CHECKING:
    import click

SECTION = "ollama"


@hookimpl
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare the ``[ollama]`` settings section."""
    register(SECTION, OllamaSettings)


@hookimpl
def register_backends(register: Callable[[Any], None], gateway: Any) -> None:
    """Register one :class:`OllamaBackend` when ``[ollama] enabled`` is true."""
    settings: OllamaSettings = gateway.settings.section(SECTION)
    if settings.enabled:
        register(OllamaBackend(settings))


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``resayil ollama-simulator``: run an Ollama simulator in the foreground."""
    cli.add_command(simulator_command)
