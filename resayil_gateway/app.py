"""``create_app(gateway)``: the aiohttp application. It only wires, in a fixed order: state, middlewares,
cleanup contexts, core routes, plugin routes.

One cleanup context per resource, each starting its resource before the ``yield`` and stopping it after, in
reverse order at shutdown: the database engines, the shared state, the request path's hot pool, the
backends, the payment providers and channels, then each background loop (stale holds swept at start,
usage rows, key usage, hold leases and plan expiry, the payment reconciler), then every plugin's
``lifespan``. Charges still in flight settle before the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .api.rate_limits import add_rate_limit_headers, rate_limiter_context
from .api.routes import API_PREFIXES, api_routes
from .errors import AuthenticationFailed, GatewayError, ServiceUnavailable
from .events.auth_failures import client_ip as request_client_ip
from .events.auth_failures import log_auth_failure
from .events.bans import ban_middleware
from .events.delivery import run_notifications
from .gateway import Gateway
from .hookcalls import await_me_maybe
from .outages import describe_outage, is_unavailable
from .web.billing_pages import billing_routes
from .web.sessions import setup_sessions
from .web_keys import GATEWAY, MODEL, REQUEST_ID

__all__ = ["GATEWAY", "REQUEST_ID", "client_ip", "create_app"]

log = logging.getLogger("resayil.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HOUSEKEEPING_INTERVAL_S = 30.0
STOP_TIMEOUT_S = 10.0  # the longest one resource may take to stop at shutdown
Context = Callable[[web.Application], AsyncIterator[None]]


def _is_api(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def _error_response(error: GatewayError) -> web.Response:
    return web.Response(
        body=orjson.dumps(error.body()),
        status=error.status,
        headers={"Content-Type": "application/json", **error.headers},
    )


def client_ip(request: web.Request) -> str:
    """The client's address: the direct peer, or what ``X-Forwarded-For`` says when the peer is one of
    ``gateway.trusted_proxies``."""
    return request_client_ip(request, request.app[GATEWAY].settings.gateway.trusted_proxies)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id (``x-request-id`` on its response, the hold id of its charge)."""
    request[REQUEST_ID] = "req_" + uuid.uuid4().hex
    return await handler(request)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time API requests by route, status and model (to the last byte, streams included)."""
    if not _is_api(request.path):
        return await handler(request)
    started = time.perf_counter()
    status = 499
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics = request.app[GATEWAY].metrics
        metrics.child(metrics.requests, route, str(status), request.get(MODEL, "")).inc()
        metrics.child(metrics.latency, route).observe(time.perf_counter() - started)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure on API paths in OpenAI's error shape; never a traceback to a client."""
    try:
        return await handler(request)
    except GatewayError as error:
        if isinstance(error, AuthenticationFailed):
            # The one fixed line fail2ban matches (examples/fail2ban): keep its shape stable.
            log_auth_failure(client_ip(request), "api_key", error.code or "invalid_api_key", request.path)
        return _error_response(error)
    except web.HTTPException as exc:
        if not _is_api(request.path) or exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status)
        kept = {name: exc.headers[name] for name in ("Allow", "Retry-After") if name in exc.headers}
        return _error_response(
            GatewayError(exc.reason, status=exc.status, type_="invalid_request_error", code=code, headers=kept)
        )
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        if is_unavailable(exc):
            log.error(
                "%s %s: the store or Redis is unavailable: %s", request.method, request.path, describe_outage(exc)
            )
            return _error_response(
                ServiceUnavailable(
                    "The service is temporarily unavailable. Please retry.", headers={"Retry-After": "2"}
                )
            )
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(
            GatewayError("The server had an error while processing your request.", code="internal_error")
        )


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["x-request-id"] = request_id


async def _store(app: web.Application) -> AsyncIterator[None]:
    """The database engines: opened on first use, closed last."""
    store = app[GATEWAY].store
    yield
    closing = asyncio.ensure_future(store.dispose())
    # asyncio.wait, not wait_for: a close stuck in a driver thread must not hold shutdown while it unwinds
    done, _ = await asyncio.wait([closing], timeout=STOP_TIMEOUT_S)
    if not done:
        log.error("the database pools did not close within %.0f s; leaving them", STOP_TIMEOUT_S)


async def _hot_pool(app: web.Application) -> AsyncIterator[None]:
    """The request path's own PostgreSQL connections: closed once every charge in flight has settled."""
    gateway = app[GATEWAY]
    yield
    cancelled = await gateway.tasks.drain(timeout=gateway.settings.gateway.shutdown_timeout_s)
    if cancelled:
        log.error(
            "stopped with %d charge(s) unsettled (the store did not come back); their holds are released when "
            "their leases run out",
            cancelled,
        )
    await gateway.ledger.close()
    await gateway.store.close_hot()


async def _shared_state(app: web.Application) -> AsyncIterator[None]:
    """Redis (or the in-process stand-in): connected, and subscribed to broadcasts, before serving."""
    state = app[GATEWAY].state
    await state.start()
    yield
    with contextlib.suppress(Exception):
        await state.close()


async def _backends(app: web.Application) -> AsyncIterator[None]:
    """Every registered backend, payment provider and channel: started together, closed together."""
    gateway = app[GATEWAY]
    parts: list[Any] = [*gateway.backends.values(), *gateway.payment_providers.values(), *gateway.channels.values()]
    started = []
    try:
        for part in parts:
            starter = getattr(part, "start", None)
            if starter is not None:
                await starter()
            started.append(part)
        yield
    finally:
        for part in reversed(started):
            closer = getattr(part, "close", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()


async def _stale_holds(app: web.Application) -> AsyncIterator[None]:
    """Release holds left by processes that died (every hold, on SQLite: one process owns that file)."""
    gateway = app[GATEWAY]
    try:
        await gateway.ledger.release_stale_holds(everything=gateway.store.is_sqlite)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        log.error("could not sweep stale holds at start (%s); housekeeping will", describe_outage(exc))
    yield


def _loop(
    name: str, run: Callable[[Gateway], Awaitable[None]], finish: Callable[[Gateway], Awaitable[None]]
) -> Context:
    """A cleanup context for one background loop: started after the resources it uses, cancelled before them,
    then ``finish`` flushes what it had batched."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        gateway = app[GATEWAY]
        task: asyncio.Task[None] = asyncio.ensure_future(run(gateway))
        yield
        task.cancel()
        # a loop cancelled inside a driver call can take a moment to unwind; never let it hold shutdown
        done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
        if not done:
            log.error("background loop %s did not stop within %.0f s; leaving it", name, STOP_TIMEOUT_S)
        finishing = asyncio.ensure_future(finish(gateway))
        await asyncio.wait([finishing], timeout=STOP_TIMEOUT_S)

    context.__name__ = context.__qualname__ = f"_{name.replace('-', '_')}"
    return context


async def _nothing(gateway: Gateway) -> None:
    return None


async def _flush_usage(gateway: Gateway) -> None:
    await gateway.drain()
    await gateway.usage.flush()


async def _flush_key_usage(gateway: Gateway) -> None:
    await gateway.keys.flush_usage()


async def _housekeeping(gateway: Gateway) -> None:
    """Renew this process's hold leases, release holds of dead processes, expire ended plan periods."""
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
        try:
            await gateway.ledger.renew_leases()
            await gateway.ledger.release_stale_holds()
            await gateway.ledger.expire_due()
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("housekeeping failed; retrying in %.0f s", HOUSEKEEPING_INTERVAL_S)
            else:
                log.error("housekeeping: %s; retrying in %.0f s", describe_outage(exc), HOUSEKEEPING_INTERVAL_S)


CORE_CONTEXTS: tuple[Context, ...] = (
    _store,
    _shared_state,
    rate_limiter_context,
    _hot_pool,
    _backends,
    _stale_holds,
    _loop("notifications", lambda g: run_notifications(g.events, g.channels, g.settings, g.clock, g.metrics), _nothing),
    _loop("usage-recorder", lambda gateway: gateway.usage.run(), _flush_usage),
    _loop("key-usage", lambda gateway: gateway.keys.run_usage_flusher(), _flush_key_usage),
    _loop("housekeeping", _housekeeping, _nothing),
    _loop("reconciler", lambda gateway: gateway.orders.run(), _nothing),
    _loop("queue-leases", lambda gateway: gateway.admission.run(), lambda gateway: gateway.admission.drain()),
)


def _plugin_lifespans(gateway: Gateway) -> list[Context]:
    contexts: list[Context] = []
    for result in gateway.pm.hook.lifespan(gateway=gateway):
        if result is None:
            continue

        async def context(app: web.Application, produced: Any = result) -> AsyncIterator[None]:
            # an ``async def`` that returns a generator, or an async generator function itself
            generator = await produced if inspect.iscoroutine(produced) else produced
            if generator is None:
                yield
                return
            await await_me_maybe(anext(generator))
            yield
            with contextlib.suppress(StopAsyncIteration):
                await anext(generator)

        contexts.append(context)
    return contexts


def create_app(gateway: Gateway) -> web.Application:
    """The web application for ``gateway``: API, health, metrics and every plugin's routes."""
    config = gateway.settings.gateway
    refusing = [ban_middleware(gateway.events.bans, config.trusted_proxies)] if config.refuse_banned_ips else []
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware, error_middleware, *refusing],
        client_max_size=config.max_body_bytes + 1,
    )
    gateway.prepare()
    app[GATEWAY] = gateway
    setup_sessions(app, gateway)
    app.on_response_prepare.append(_add_request_id)
    app.on_response_prepare.append(add_rate_limit_headers)
    app.cleanup_ctx.extend(CORE_CONTEXTS)
    app.cleanup_ctx.extend(_plugin_lifespans(gateway))
    app.add_routes(api_routes())
    for routes in gateway.pm.hook.register_routes(gateway=gateway):
        if routes:
            app.add_routes(routes)
    # The core's plain billing pages serve where no plugin gave its own (the portal replaces the top-up page).
    app.add_routes(_not_taken(app, billing_routes()))
    return app


def _not_taken(app: web.Application, routes: list[web.RouteDef]) -> list[web.RouteDef]:
    """The routes whose method and path no route of ``app`` answers yet."""
    taken = {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource is not None}
    return [route for route in routes if (route.method, route.path) not in taken]
