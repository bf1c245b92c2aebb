"""``POST /v1/chat/completions`` and ``POST /v1/embeddings``: authenticate, validate, check access, hold
credits, wait for a slot, run on the chosen backend, relay (JSON or SSE chunk by chunk), settle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import orjson
from aiohttp import web

from ..billing.metering import Meter
from ..domain import Caller, ChatDelta, ChatRequest, EmbeddingRequest, ModelInfo, Usage
from ..errors import (
    AuthenticationFailed,
    BackendError,
    GatewayError,
    ModelNotFound,
    NoCapacity,
    UpstreamUnavailable,
)
from ..hookcalls import first_result
from ..routing.backends import Route
from ..routing.catalog import route_allowed
from ..routing.failover import confirm_route, prefer_from_headers, route_after_refusal
from ..web_keys import GATEWAY, MODEL, REQUEST_ID
from .openai_format import DONE, ChunkEncoder, completion_body, embeddings_body, error_event
from .parsing import parse_chat_request, parse_embedding_request, read_json
from .rate_limits import enforce_rate_limit

if TYPE_CHECKING:
    from ..gateway import Gateway

log = logging.getLogger("resayil.api")
T = TypeVar("T")

JSON_HEADERS = {"Content-Type": "application/json"}
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


async def authenticate(request: web.Request, gateway: Gateway) -> Caller:
    """The caller, from the first ``authenticate`` hook that answers (401 otherwise), counted against its
    plan's rate limit (429 when over it)."""
    caller = await first_result(gateway.pm.hook.authenticate, request=request, gateway=gateway)
    if caller is None:
        raise AuthenticationFailed("No credentials were accepted.")
    await enforce_rate_limit(request, gateway, caller)
    return caller


async def resolve_model(gateway: Gateway, caller: Caller, name: str) -> ModelInfo:
    """The catalog entry for ``name`` that the caller may use; 404 when unknown or hidden, 403 by plan."""
    model = gateway.catalog.get(name)
    if model is None:
        raise ModelNotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model")
    refusals = await gateway.refusals(caller, model)
    if refusals:
        raise refusals[0]
    return model


async def choose_route(
    gateway: Gateway, caller: Caller, chat: ChatRequest | EmbeddingRequest, model: ModelInfo
) -> Route:
    """Where the request runs, from the first ``choose_backend`` hook that answers; 503 when none can or the
    answer would run a restricted model or one outside the caller's plan. Embedding requests come through
    here too (``chat_request`` is then the ``EmbeddingRequest``)."""
    route = await first_result(
        gateway.pm.hook.choose_backend, caller=caller, chat_request=chat, model=model, gateway=gateway
    )
    if route is not None and not route_allowed(gateway.catalog, gateway.settings.plan(caller.plan), route):
        log.error(
            "choose_backend chose %s for a %s caller: refused (restricted or outside the plan)",
            route.upstream_model,
            caller.plan,
        )
        route = None
    if route is None:
        raise NoCapacity("No backend can serve this model right now.", headers={"Retry-After": "5"})
    return route


def _priority(gateway: Gateway, caller: Caller) -> int:
    return gateway.settings.plan(caller.plan).priority


def _route_headers(route: Route, headers: dict[str, str]) -> dict[str, str]:
    headers["x-resayil-backend"] = route.backend.kind
    return headers


async def _caller_and_body(request: web.Request) -> tuple[Gateway, Caller, dict[str, Any]]:
    gateway = request.app[GATEWAY]
    caller = await authenticate(request, gateway)
    prefer_from_headers(request.headers)
    return gateway, caller, await read_json(request, gateway.settings.gateway.max_body_bytes)


async def _admitted(
    gateway: Gateway, caller: Caller, route: Route, meter: Meter, call: Callable[[Route], Awaitable[T]]
) -> tuple[Route, T]:
    """Run a whole (non-streamed) backend call in one of the backend's slots, on the cloud once more if the
    local backend refused it before output; any failure releases the hold and reaches the client as an
    OpenAI error. Returns the route it ran on and the result."""
    try:
        while True:
            meter.backend = route.backend.name
            try:
                async with _slot(gateway, caller, route):
                    return route, await _in_flight(gateway, route, call)
            except (BackendError, OSError) as exc:
                retry = await route_after_refusal(gateway, caller, route, exc)
                if retry is None:
                    raise
                route = retry
    except BaseException as exc:
        await _fail(gateway, meter, route, exc)
        _reraise(exc)


async def _confirmed(gateway: Gateway, meter: Meter, route: Route) -> Route:
    """The route after spending today's cloud budget for it (see ``confirm_route``); a refusal releases the
    hold."""
    try:
        return await confirm_route(gateway, route)
    except BaseException as exc:
        await _fail(gateway, meter, route, exc)
        raise


def _slot(gateway: Gateway, caller: Caller, route: Route) -> AbstractAsyncContextManager[None]:
    return gateway.admission.slot(
        route.backend.name, _priority(gateway, caller), gateway.settings.routing.max_queue_wait_s
    )


async def _in_flight(gateway: Gateway, route: Route, call: Callable[[Route], Awaitable[T]]) -> T:
    in_flight = gateway.metrics.child(gateway.metrics.in_flight, route.backend.name)
    in_flight.inc()
    try:
        return await call(route)
    finally:
        in_flight.dec()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """Answer an OpenAI chat-completions request, streamed or whole."""
    gateway, caller, body = await _caller_and_body(request)
    chat = parse_chat_request(body)
    model = await resolve_model(gateway, caller, chat.model)
    request[MODEL] = model.id
    route = await choose_route(gateway, caller, chat, model)
    meter = gateway.metering.meter(caller, model, route.backend.name, request[REQUEST_ID], "chat", chat.stream)
    await meter.reserve(chat.estimated_prompt_tokens(), chat.max_tokens)
    route = await _confirmed(gateway, meter, route)
    if chat.stream:
        return await _stream(request, gateway, caller, chat, route, meter)
    return await _whole(request, gateway, caller, chat, route, meter)


async def _whole(
    request: web.Request, gateway: Gateway, caller: Caller, chat: ChatRequest, route: Route, meter: Meter
) -> web.StreamResponse:
    route, result = await _admitted(gateway, caller, route, meter, lambda on: on.backend.chat(chat, on.upstream_model))
    created = int(time.time())
    payload = orjson.dumps(completion_body(f"chatcmpl-{request[REQUEST_ID]}", created, route.model.id, result))
    meter.finish_later(result.usage, 200)
    return web.Response(body=payload, headers=_route_headers(route, dict(JSON_HEADERS)))


async def _stream(
    request: web.Request, gateway: Gateway, caller: Caller, chat: ChatRequest, route: Route, meter: Meter
) -> web.StreamResponse:
    backend = route.backend
    meter.backend = backend.name
    encoder = ChunkEncoder(f"chatcmpl-{request[REQUEST_ID]}", int(time.time()), route.model.id, chat.include_usage)
    produced = _Produced(chat.estimated_prompt_tokens())
    response: web.StreamResponse | None = None
    deltas: AsyncIterator[ChatDelta] | None = None
    try:
        async with _slot(gateway, caller, route):
            in_flight = gateway.metrics.child(gateway.metrics.in_flight, backend.name)
            in_flight.inc()
            try:
                deltas = backend.stream_chat(chat, route.upstream_model)
                delta: ChatDelta | None = await anext(deltas)
                gateway.metrics.child(gateway.metrics.first_token, backend.name).observe(
                    time.perf_counter() - meter.started
                )
                response = web.StreamResponse(headers=_route_headers(route, dict(SSE_HEADERS)))
                await response.prepare(request)
                pending = encoder.role()  # sent together with the first delta: one write, not two
                while delta is not None:
                    produced.add(delta)
                    chunk = pending + encoder.delta(delta)
                    pending = b""
                    if chunk:
                        await response.write(chunk)
                    if delta.finish_reason is not None:
                        break
                    delta = await anext(deltas, None)
            finally:
                in_flight.dec()
                if deltas is not None:
                    await _close(deltas)
    except BaseException as exc:
        if response is None:
            retry = await route_after_refusal(gateway, caller, route, exc)
            if retry is not None:  # the local backend refused before any output: once more, in the cloud
                return await _stream(request, gateway, caller, chat, retry, meter)
            await _fail(gateway, meter, route, exc)
            _reraise(exc)
        # Output was produced: charge it, and tell a still-connected client the stream broke.
        error = _as_gateway_error(exc)
        client_gone = isinstance(exc, asyncio.CancelledError | ConnectionError)
        await meter.finish(produced.usage(), 499 if client_gone else error.status, error.code)
        if not client_gone:
            gateway.metrics.upstream_errors.labels(backend.name, error.code or "error").inc()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write(error_event(error.body()))
            return response
        raise
    usage = produced.usage()
    tail = encoder.finish(produced.finish_reason or "stop")
    if chat.include_usage:
        tail += encoder.usage(usage)
    try:
        await response.write(tail + DONE)
        await response.write_eof()
    finally:
        meter.finish_later(usage, 200)
    return response


class _Produced:
    """What a stream has produced so far, to charge it even when it is cut short."""

    __slots__ = ("chars", "finish_reason", "pieces", "prompt_estimate", "reported")

    def __init__(self, prompt_estimate: int) -> None:
        self.prompt_estimate = prompt_estimate
        self.pieces = 0
        self.chars = 0
        self.reported: Usage | None = None
        self.finish_reason: str | None = None

    def add(self, delta: ChatDelta) -> None:
        if delta.content or delta.reasoning or delta.tool_calls:
            self.pieces += 1
            self.chars += len(delta.content or "") + len(delta.reasoning or "")
        if delta.usage is not None:
            self.reported = delta.usage
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason

    def usage(self) -> Usage:
        if self.reported is not None:
            return self.reported
        if not self.pieces:
            return Usage()
        return Usage(self.prompt_estimate, max(self.pieces, self.chars // 4))


async def _close(deltas: AsyncIterator[ChatDelta]) -> None:
    closer = getattr(deltas, "aclose", None)
    if closer is not None:
        try:
            await asyncio.shield(closer())
        except Exception:
            log.debug("closing a backend stream failed", exc_info=True)


async def _fail(gateway: Gateway, meter: Meter, route: Route, exc: BaseException) -> None:
    """Release the hold of a request that produced nothing, and count the upstream error."""
    error = _as_gateway_error(exc)
    if isinstance(error, BackendError) and not isinstance(exc, asyncio.CancelledError):
        gateway.metrics.upstream_errors.labels(route.backend.name, error.code or "error").inc()
    status = 499 if isinstance(exc, asyncio.CancelledError) else error.status
    await meter.finish(None, status, error.code)


def _reraise(exc: BaseException) -> NoReturn:
    """Raise what the client should see: gateway errors and cancellations as they are, bugs as a 502."""
    if isinstance(exc, GatewayError | asyncio.CancelledError | ConnectionError) or not isinstance(exc, Exception):
        raise exc
    raise _as_gateway_error(exc) from None


def _as_gateway_error(exc: BaseException) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, asyncio.CancelledError | ConnectionError):
        return GatewayError("The client closed the connection.", status=499, code="client_closed")
    log.error("backend failed unexpectedly", exc_info=exc)
    return UpstreamUnavailable("The model server failed to answer.")


async def embeddings(request: web.Request) -> web.StreamResponse:
    """Answer an OpenAI embeddings request."""
    gateway, caller, body = await _caller_and_body(request)
    embed = parse_embedding_request(body)
    model = await resolve_model(gateway, caller, embed.model)
    request[MODEL] = model.id
    route = await choose_route(gateway, caller, embed, model)
    meter = gateway.metering.meter(caller, model, route.backend.name, request[REQUEST_ID], "embeddings", False)
    await meter.reserve(embed.estimated_prompt_tokens(), 0)
    route = await _confirmed(gateway, meter, route)
    route, result = await _admitted(
        gateway, caller, route, meter, lambda on: on.backend.embed(embed, on.upstream_model)
    )
    payload: Any = embeddings_body(model.id, result, embed.encoding_format)
    meter.finish_later(result.usage, 200)
    return web.Response(body=orjson.dumps(payload), headers=_route_headers(route, dict(JSON_HEADERS)))
