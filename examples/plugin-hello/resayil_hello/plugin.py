"""Hook implementations of the ``hello`` plugin (entry point ``hello = "resayil_hello.plugin"``).

Three hooks, the smallest useful set: a settings section, a command that reads it, and an event observer.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from pydantic import Field

from resayil_gateway import hookimpl
from resayil_gateway.config import ConfigError, Section, load_settings
from resayil_gateway.plugins import PluginError, make_plugin_manager

if TYPE_CHECKING:
    from resayil_gateway.domain import Event

SECTION = "hello"
log = logging.getLogger("resayil.hello")

# How many events of each name this process has seen (``account.created``, ``key.created``, ...).
seen: Counter[str] = Counter()


class HelloSettings(Section):
    """``[hello]``: the word ``resayil hello`` greets with (``RESAYIL_HELLO__GREETING`` overrides it)."""

    greeting: str = Field(default="Hello", min_length=1, description="The greeting printed by `resayil hello`.")


@hookimpl
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare the ``[hello]`` settings section."""
    register(SECTION, HelloSettings)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``resayil hello [NAME]``."""
    cli.add_command(hello_command)


@hookimpl
def on_event(event: Event, gateway: Any) -> None:
    """Count every event by name and log one line for it."""
    seen[event.name] += 1
    log.info("hello: saw %s for account %s (%d so far)", event.name, event.account_id, seen[event.name])


def read_settings(config_path: str | None) -> HelloSettings:
    """The ``[hello]`` section as the gateway would load it: defaults < TOML file < environment.

    Every installed plugin's section is registered too, so a file or variable meant for another plugin is
    not mistaken for an unknown section.
    """
    pm = make_plugin_manager()
    sections: dict[str, type[Section]] = {}
    pm.hook.register_settings(register=sections.__setitem__)
    settings: HelloSettings = load_settings(config_path, env=os.environ, plugin_sections=sections).section(SECTION)
    return settings


@click.command("hello")
@click.argument("name", default="world")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="RESAYIL_CONFIG",
    help="TOML configuration file (default: $RESAYIL_CONFIG).",
)
def hello_command(name: str, config_path: str | None) -> None:
    """Greet NAME with the configured greeting."""
    try:
        settings = read_settings(config_path)
    except (ConfigError, PluginError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{settings.greeting}, {name}!")
