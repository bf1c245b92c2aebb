"""Where the rate limiter (:mod:`resayil_gateway.limits`) meets a request: counted once right after
authentication, headers on every response.

Unauthenticated requests (401) carry no ``x-ratelimit-*`` headers: there is no account to count them
against (failed keys are fail2ban's business, SPEC §7). Every response after authentication does: 200s,
streams, 400, 402, 403, 404, 429, 5xx.
"""

from __future__ import annotations

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


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the ``x-ratelimit-*-requests`` headers of the request's decision, if any."""
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
