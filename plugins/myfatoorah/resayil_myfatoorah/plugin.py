"""Hook implementations of the ``myfatoorah`` plugin (entry point ``myfatoorah = "resayil_myfatoorah.plugin"``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resayil_gateway import hookimpl

from .provider import MyFatoorahProvider
from .settings import MyFatoorahSettings
from .simulator import simulator_command

if TYPE_CHECKING:
    import click

SECTION = "myfatoorah"


@hookimpl
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare the ``[myfatoorah]`` settings section."""
    register(SECTION, MyFatoorahSettings)


@hookimpl
def register_payment_providers(register: Callable[[Any], None], gateway: Any) -> None:
    """Register :class:`MyFatoorahProvider` when ``[myfatoorah] enabled``; refuse an empty token for a real host."""
    settings: MyFatoorahSettings = gateway.settings.section(SECTION)
    if settings.enabled:
        settings.require_token()
        register(MyFatoorahProvider(settings, clock=gateway.clock))


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``resayil myfatoorah-simulator``: run a MyFatoorah sandbox simulator in the foreground."""
    cli.add_command(simulator_command)
