"""Every hook a plugin can implement: the plugin author's reference.

A plugin is a module (or object) with functions named like the hooks below, decorated with
``@resayil_gateway.hookimpl``, registered through the entry-point group ``resayil_gateway``::

    [project.entry-points.resayil_gateway]
    hello = "resayil_hello.plugin"

Two kinds of hook:

- **Per-request and lifecycle hooks** (``authenticate``, ``check_access``, ``choose_backend``, ``price_usage``,
  ``on_event``, ``lifespan``) may be plain functions or ``async def``: the core awaits each answer before it
  decides, so an ``async def`` firstresult implementation that returns ``None`` lets the next plugin decide,
  exactly as a plain one does. (Hook wrappers are not supported on these.)
- **Registration hooks** (``register_*``, ``configure``) run while the gateway, the application or the
  command line is assembled, before or outside the event loop: they must be plain functions, and
  registering an ``async def`` implementation of one fails at once (:data:`SYNC_ONLY`). Do I/O in
  ``lifespan`` or in your backend's ``start``.

The core's own behaviour (API-key auth, access rules, pricing, routing) is itself a plugin in
``resayil_gateway.default_plugins``, marked ``trylast`` so that any installed plugin wins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from aiohttp import web

    from .domain import Caller, ChatRequest, Event, ModelInfo, Usage
    from .errors import GatewayError
    from .gateway import Gateway
    from .routing.backends import Backend, Route

hookspec = pluggy.HookspecMarker("resayil_gateway")
hookimpl = pluggy.HookimplMarker("resayil_gateway")

SYNC_ONLY = frozenset(
    {
        "configure",
        "register_settings",
        "register_backends",
        "register_payment_providers",
        "register_channels",
        "register_routes",
        "register_commands",
    }
)
"""Hooks that must be implemented by plain functions (the plugin manager refuses ``async def`` ones)."""

__all__ = [
    "authenticate",
    "check_access",
    "choose_backend",
    "configure",
    "lifespan",
    "on_event",
    "price_usage",
    "register_backends",
    "register_channels",
    "register_commands",
    "register_payment_providers",
    "register_routes",
    "register_settings",
]


@hookspec(historic=True)
def configure(gateway: Gateway) -> None:
    """See the gateway once it is built (settings loaded, store and shared state created, not yet started).

    Historic: a plugin registered later (in a test) is called at once. Keep a reference if you need one;
    do no I/O here (use ``lifespan`` for that).
    """


@hookspec
def register_settings(register: Callable[[str, type], None]) -> None:
    """Declare your settings section: call ``register("name", Model)`` with a pydantic model.

    Subclass :class:`resayil_gateway.config.Section` so unknown keys are refused. The core reads the section
    from the TOML file and ``RESAYIL_NAME__KEY`` variables, validates it and reports errors naming the key.
    Read it later with ``gateway.settings.section("name")``. Called before the gateway is built.
    """


@hookspec
def register_backends(register: Callable[[Backend], None], gateway: Gateway) -> None:
    """Add model backends: call ``register(backend)`` for each.

    A backend implements :class:`resayil_gateway.routing.backends.Backend`: a unique ``name``, a ``kind``
    (``"local"`` or ``"cloud"``), ``max_concurrency``, cached ``models()``, ``chat``, ``stream_chat`` and
    ``embed``. The core starts and closes it with the application and admits requests to it in order.
    """


@hookspec
def register_payment_providers(register: Callable[[Any], None], gateway: Gateway) -> None:
    """Add checkout providers (e.g. MyFatoorah): call ``register(provider)`` for each."""


@hookspec
def register_channels(register: Callable[[Any], None], gateway: Gateway) -> None:
    """Add notification channels (e.g. WhatsApp): call ``register(channel)`` for each."""


@hookspec
def register_routes(gateway: Gateway) -> Iterable[web.AbstractRouteDef] | None:
    """Return aiohttp route definitions to add (a ``web.RouteTableDef`` or a list of ``web.get(...)``).

    Called once while the application is built; routes freeze when it starts. Use it for pages, payment
    callbacks and webhooks. Handlers reach the gateway with ``request.app[GATEWAY]``.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``resayil`` command line: ``cli.add_command(...)``."""


@hookspec
def lifespan(gateway: Gateway) -> AsyncIterator[None] | None:
    """Return an async generator that sets up, ``yield``s once, then tears down (an aiohttp cleanup context).

    Start background tasks and open connections before the ``yield``; stop and close them after. Runs in
    every worker process. Return ``None`` (or do not implement it) when there is nothing to run.
    """


@hookspec(firstresult=True)
def authenticate(request: web.Request, gateway: Gateway) -> Caller | None:
    """Say who is calling: return a :class:`Caller`, ``None`` to let the next plugin decide, or raise
    :class:`resayil_gateway.errors.AuthenticationFailed` to refuse.

    Per request, on the hot path: cache what you look up. The core's API-key implementation runs last.
    """


@hookspec
def check_access(caller: Caller, model: ModelInfo, gateway: Gateway) -> GatewayError | None:
    """Veto a model for a caller: return an error to refuse (the first one is raised), or ``None`` to allow.

    Return :class:`resayil_gateway.errors.ModelNotFound` to hide the model as if it did not exist, or
    :class:`resayil_gateway.errors.PermissionDenied` when the plan does not allow it. Also used to filter
    ``GET /v1/models``. May be ``async``; per request, so cache what you look up.
    """


@hookspec(firstresult=True)
def choose_backend(caller: Caller, chat_request: ChatRequest, model: ModelInfo, gateway: Gateway) -> Route | None:
    """Decide where a request runs: return a :class:`resayil_gateway.routing.backends.Route`, or ``None``.

    Failover lives here: read queue depths (``gateway.admission``) and choose another backend and model.
    The caller is billed at the requested model's price whatever the route. Per request: may be ``async``
    (shared queue depth, the cloud budget), but keep it to one round trip at most.
    """


@hookspec(firstresult=True)
def price_usage(caller: Caller, model: ModelInfo, backend: str, usage: Usage, gateway: Gateway) -> int | None:
    """Return the credits a usage costs (an integer ≥ 0), or ``None`` to let the next plugin decide.

    Also called with the estimated usage to size the hold taken before a request runs. The default is
    ``ceil(total_tokens × multiplier / 1000)``, at least 1 when any token was used.
    """


@hookspec
def on_event(event: Event, gateway: Gateway) -> Any:
    """Observe a domain event (``account.created``, ``key.revoked``, ``request.completed``, ...).

    May be ``async``. Called after the change is committed; an exception is logged and never reaches the
    request. Keep it quick: queue slow work (sending a message) rather than doing it inline.
    """
