"""From configuration to a gateway: load plugins, let them declare their settings, read and validate the
settings, and assemble the :class:`~resayil_gateway.gateway.Gateway`. Nothing is opened here."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .clock import Clock
from .config import ConfigError, Section, load_settings
from .gateway import Gateway
from .plugins import make_plugin_manager


def gateway_from_config(
    config_path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    plugins: Iterable[Any] = (),
    load_entrypoints: bool = True,
    blocked: Iterable[str] = (),
    clock: Clock | None = None,
    secret: bytes | None = None,
) -> Gateway:
    """Load plugins, read and validate settings, and assemble a prepared gateway (registration hooks run,
    nothing opened). Raises ``ConfigError`` or ``PluginError`` with a one-line message on any problem."""
    env = dict(os.environ if env is None else env)
    pm = make_plugin_manager(load_entrypoints=load_entrypoints, blocked=blocked, env=env, extra=plugins)
    sections: dict[str, type[Section]] = {}

    def register(name: str, model: type[Section]) -> None:
        if name in sections and sections[name] is not model:
            raise ConfigError(f"settings section [{name}] is registered by two plugins")
        sections[name] = model

    pm.hook.register_settings(register=register)
    settings = load_settings(config_path, env=env, plugin_sections=sections, overrides=overrides)
    return Gateway(settings, pm, clock=clock, secret=secret).prepare()
