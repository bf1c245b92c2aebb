"""The plugin manager: the core's default plugins plus every installed entry point in group ``resayil_gateway``.

``RESAYIL_LOAD_PLUGINS=a,b`` loads only those entry points; ``RESAYIL_DISABLE_PLUGINS=a,b`` blocks them
(names are entry-point names, as ``resayil plugins`` lists them). ``check_pending()`` runs last so a
misspelt hook implementation fails loudly instead of being silently ignored.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from . import hookspecs
from .hookcalls import await_me_maybe
from .hookspecs import SYNC_ONLY, hookimpl

PROJECT = "resayil_gateway"
__all__ = ["DEFAULT_PLUGINS", "PluginError", "await_me_maybe", "hookimpl", "make_plugin_manager", "plugin_list"]

DEFAULT_PLUGINS = (
    "resayil_gateway.default_plugins.api_key_auth",
    "resayil_gateway.default_plugins.model_access",
    "resayil_gateway.default_plugins.pricing",
    "resayil_gateway.default_plugins.routing",
)


class PluginError(Exception):
    """A plugin could not be loaded or implements a hook that does not exist."""


def _names(value: str | None) -> set[str]:
    return {name.strip() for name in (value or "").split(",") if name.strip()}


def make_plugin_manager(
    load_entrypoints: bool = True,
    blocked: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    extra: Iterable[Any] = (),
) -> pluggy.PluginManager:
    """Build a plugin manager with the hook specifications, default plugins, entry points and ``extra``.

    ``blocked`` and ``RESAYIL_DISABLE_PLUGINS`` name plugins to leave out; ``RESAYIL_LOAD_PLUGINS``, when
    set, is the exhaustive list of entry points to load. ``extra`` registers plugin objects directly (tests).
    Raises :class:`PluginError` when a plugin is broken.
    """
    env = os.environ if env is None else env
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    disabled = set(blocked) | _names(env.get("RESAYIL_DISABLE_PLUGINS"))
    only = _names(env.get("RESAYIL_LOAD_PLUGINS")) or None
    for name in disabled:
        pm.set_blocked(name)
    if load_entrypoints:
        _load_entrypoints(pm, only, disabled)
    for module_name in DEFAULT_PLUGINS:
        if module_name not in disabled:
            pm.register(importlib.import_module(module_name), name=module_name)
    for plugin in extra:
        try:
            pm.register(plugin)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {plugin!r}: {_one_line(exc)}") from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {_one_line(exc)}") from None
    _refuse_async_registration(pm)
    return pm


def _refuse_async_registration(pm: pluggy.PluginManager) -> None:
    """Registration hooks run outside the event loop: an ``async def`` one would silently never run."""
    for name in SYNC_ONLY:
        for impl in getattr(pm.hook, name).get_hookimpls():
            function = impl.function
            if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: hook {name} must be a plain function, not async "
                    "(do I/O in lifespan or in a backend's start)"
                )


def _load_entrypoints(pm: pluggy.PluginManager, only: set[str] | None, disabled: set[str]) -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=PROJECT):
        if entry.name in disabled or (only is not None and entry.name not in only):
            continue
        if pm.get_plugin(entry.name) is not None or pm.is_blocked(entry.name):
            continue
        try:
            plugin = entry.load()
        except Exception as exc:
            raise PluginError(f"plugin {entry.name!r} ({entry.value}) failed to load: {_one_line(exc)}") from None
        try:
            pm.register(plugin, name=entry.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {entry.name!r}: {_one_line(exc)}") from None
        if entry.dist is not None:
            pm._plugin_distinfo.append((plugin, entry.dist))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def plugin_list(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Each registered plugin: its name, version (for installed distributions) and the hooks it implements."""
    versions = {id(plugin): dist.version for plugin, dist in pm.list_plugin_distinfo()}
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda pair: pair[0]):
        if plugin is None:
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        rows.append({"name": name, "version": versions.get(id(plugin)), "hooks": hooks})
    return rows
