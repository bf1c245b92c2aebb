"""``create_app(gateway)``: the aiohttp application. It only wires, in a fixed order: state, middlewares,
cleanup contexts (services, background tasks, plugin lifespans), core routes, plugin routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import orjson
import redis.exceptions
import sqlalchemy.exc
from aiohttp import web

from .api.keys import GATEWAY, MODEL, REQUEST_ID
from .api.routes import API_PREFIXES, api_routes
from .errors import AuthenticationFailed, GatewayError, ServiceUnavailable
from .events.auth_failures import client_ip, log_auth_failure
from .events.bans import ban_middleware
from .events.delivery import delivery_context
from .gateway import Gateway
from .plugins import await_me_maybe

__all__ = ["GATEWAY", "REQUEST_ID", "client_ip", "create_app"]

log = logging.getLogger("resayil.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HOUSEKEEPING_INTERVAL_S = 30.0
# Failures of the gateway's own stores: the client gets a 503 to retry, never a 500.
UNAVAILABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


def _is_api(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def _error_response(error: GatewayError) -> web.Response:
    return web.Response(
        body=orjson.dumps(error.body()),
        status=error.status,
        headers={"Content-Type": "application/json", **error.headers},
    )


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
    except (asyncio.CancelledError, ConnectionError):
        raise
    except UNAVAILABLE as exc:
        log.error("%s %s: the store or Redis is unavailable: %s", request.method, request.path, type(exc).__name__)
        return _error_response(
            ServiceUnavailable("The service is temporarily unavailable. Please retry.", headers={"Retry-After": "2"})
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(
            GatewayError("The server had an error while processing your request.", code="internal_error")
        )


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["x-request-id"] = request_id


async def _services(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    await gateway.start_services()
    if gateway.store.is_sqlite:
        await gateway.ledger.release_stale_holds(everything=True)
    else:
        await gateway.ledger.release_stale_holds()
    tasks = [
        asyncio.create_task(gateway.usage.run(), name="usage-recorder"),
        asyncio.create_task(gateway.keys.run_usage_flusher(), name="key-usage"),
        asyncio.create_task(gateway.housekeeping(HOUSEKEEPING_INTERVAL_S), name="housekeeping"),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await gateway.stop_services()


def _plugin_lifespans(gateway: Gateway) -> list[Callable[[web.Application], AsyncIterator[None]]]:
    contexts: list[Callable[[web.Application], AsyncIterator[None]]] = []
    for result in gateway.pm.hook.lifespan(gateway=gateway):
        if result is None:
            continue

        async def context(app: web.Application, generator: AsyncIterator[None] = result) -> AsyncIterator[None]:
            await await_me_maybe(anext(generator))
            yield
            with contextlib.suppress(StopAsyncIteration):
                await anext(generator)

        contexts.append(context)
    return contexts


def create_app(gateway: Gateway) -> web.Application:
    """The web application for ``gateway``: API, health, metrics and every plugin's routes."""
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware, error_middleware, ban_middleware],
        client_max_size=gateway.settings.gateway.max_body_bytes + 1,
    )
    app[GATEWAY] = gateway
    app.on_response_prepare.append(_add_request_id)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(delivery_context)
    app.cleanup_ctx.extend(_plugin_lifespans(gateway))
    app.add_routes(api_routes())
    for routes in gateway.pm.hook.register_routes(gateway=gateway):
        if routes:
            app.add_routes(routes)
    return app
