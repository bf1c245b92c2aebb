"""Where the rate limiter (:mod:`resayil_gateway.limits`) meets a request: counted once right after
authentication, headers on every response.

Unauthenticated requests (401) carry no ``x-ratelimit-*`` headers: there is no account to count them
against (failed keys are fail2ban's business, SPEC §7). Every response after authentication does: 200s,
streams, 400, 402, 403, 404, 429, 5xx.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import RateLimited
from ..limits import Decision
from ..web_keys import GATEWAY

if TYPE_CHECKING:
    from ..domain import Caller
    from ..gateway import Gateway

RATE_LIMIT: web.RequestKey[Decision] = web.RequestKey("rate_limit", Decision)
_PENDING: web.RequestKey[asyncio.Future[None]] = web.RequestKey("rate_limit_pending", asyncio.Future)


async def enforce_rate_limit(request: web.Request, gateway: Gateway, caller: Caller) -> None:
    """Count the request against the caller's account and plan; raise 429 ``rate_limit_exceeded`` when the
    last minute already holds the plan's ``requests_per_minute``."""
    limit = gateway.settings.plan(caller.plan).requests_per_minute
    decision = await gateway.limiter.acquire(str(caller.account_id), limit)
    request[RATE_LIMIT] = decision
    if not decision.allowed:
        raise RateLimited(
            f"Rate limit reached for requests: your plan allows {limit} requests per minute. "
            f"Please try again in {decision.retry_after_s:.3g}s.",
            headers=decision.retry_headers(),
        )


def start_rate_limit(request: web.Request, gateway: Gateway, caller: Caller) -> None:
    """Start counting the request (as :func:`enforce_rate_limit`) while the handler goes on reading and routing
    it: the Redis round trip overlaps that work instead of adding to it. The handler must call
    :func:`rate_limit_checked` before it does anything that costs (the credit hold)."""
    check = asyncio.ensure_future(enforce_rate_limit(request, gateway, caller))
    check.add_done_callback(_retrieved)
    request[_PENDING] = check


def _retrieved(check: asyncio.Future[None]) -> None:
    if not check.cancelled():
        check.exception()  # retrieved here: an answer given before the check (e.g. a 400) raises nothing twice


async def rate_limit_checked(request: web.Request) -> None:
    """Wait for the count :func:`start_rate_limit` started; 429 (or the limiter's 503) when it refused."""
    check = request.pop(_PENDING, None)
    if check is not None:
        await check


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the ``x-ratelimit-*-requests`` headers of the request's decision, if any (an
    answer given before a started count finished, e.g. a 400, waits for it so that it carries them too)."""
    check = request.get(_PENDING)
    if check is not None and not check.done():
        await asyncio.wait([check])
    decision = request.get(RATE_LIMIT)
    if decision is not None:
        headers = response.headers
        for name, value in decision.headers().items():
            headers[name] = value


async def rate_limiter_context(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the gateway's limiter started after the shared state it uses, closed before it."""
    limiter = app[GATEWAY].limiter
    await limiter.start()
    yield
    await limiter.close()
