"""The Redis rate limiter: one sliding window per account shared by every worker on every machine.

One Lua script (loaded once, then called by SHA) checks and counts a request atomically in one round trip.
Times are the gateway clock's wall time in milliseconds, passed into the script: tests drive them with a
fake clock, and machines kept in step by NTP (milliseconds apart) disagree by far less than the one-second
resolution clients see. Redis ``TIME`` would remove even that skew but could not be faked in tests.

When Redis cannot be reached, or does not answer within ``[limits] redis_timeout_s`` (a hung Redis must not
hang the request: the call is abandoned and its connection dropped), the configured choice applies
(``[limits] on_redis_error``): ``open`` keeps serving under this worker's own in-process window (the limit
then holds per worker instead of globally), ``closed`` answers 503 with ``Retry-After``. Either way one
warning is logged when Redis is lost and one line when it is back; never a 500.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable
from typing import Any, Literal

import redis.exceptions

from ..clock import Clock
from ..errors import ServiceUnavailable
from ..state.script_batch import ScriptBatch
from .limiter import WINDOW_S, Decision, RateLimiter, decide
from .sliding_window import LocalRateLimiter

log = logging.getLogger("resayil.limits")

# KEYS[1]: the account's window, a sorted set of admission times (ms).
# ARGV: now (ms), window (ms), limit, a member unique to this request.
# Returns {admitted, count after, newest admission (ms), admission whose leaving frees a place (ms)}.
SLIDING_WINDOW_LUA = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, count + 1, now, now}
end
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
local blocking = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')[2]
return {0, count, tonumber(newest), tonumber(blocking)}
"""

# builtin TimeoutError (what ``asyncio.timeout`` raises) is an OSError; named for the reader
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError, OSError)
DEFAULT_TIMEOUT_S = 0.25


class RedisRateLimiter(RateLimiter):
    """Sliding one-minute windows in Redis (keys from ``key(subject)``), with a fallback when Redis is down or
    slower than ``timeout_s`` seconds."""

    def __init__(
        self,
        client: Any,
        key: Callable[[str], str],
        clock: Clock,
        on_redis_error: Literal["open", "closed"] = "open",
        *,
        scripts: ScriptBatch | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.redis = client
        # shared with the queue's scripts when the gateway passes its state's batch
        self.scripts = scripts or ScriptBatch(lambda: self.redis)
        self.key = key
        self.clock = clock
        self.on_redis_error = on_redis_error
        self.timeout_s = timeout_s
        self.fallback = LocalRateLimiter(clock)
        self._script = client.register_script(SLIDING_WINDOW_LUA)
        self._members = itertools.count()
        self._token = secrets.token_hex(4)
        self._window_ms = int(WINDOW_S * 1000)
        self._unreachable = False

    async def start(self) -> None:
        """Load the script so the first request already calls it by SHA."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.redis.script_load(SLIDING_WINDOW_LUA)
        except UNREACHABLE as exc:
            self._lost(exc)

    async def acquire(self, subject: str, limit: int) -> Decision:
        """Admit and count the request when fewer than ``limit`` were admitted in the last minute, across
        every worker sharing this Redis."""
        now_ms = int(self.clock.now().timestamp() * 1000)
        member = f"{now_ms}:{self._token}:{next(self._members)}"
        try:
            # Giving up waits no more for the batch's reply; the batch matches replies to their own calls, so
            # a late reply is never read by another call.
            async with asyncio.timeout(self.timeout_s):
                admitted, count, newest, blocking = await self.scripts(
                    self._script, [self.key(subject)], [now_ms, self._window_ms, limit, member]
                )
        except UNREACHABLE as exc:
            self._lost(exc)
            if self.on_redis_error == "closed":
                raise ServiceUnavailable(
                    "The service is temporarily unavailable. Please retry.", headers={"Retry-After": "2"}
                ) from None
            return self.fallback.acquire_now(subject, limit)
        if self._unreachable:
            self._unreachable = False
            log.warning("rate limiter: Redis is reachable again; limits are shared across workers again")
        return decide(int(count), limit, admitted == 1, now_ms / 1000, int(newest) / 1000, int(blocking) / 1000)

    def _lost(self, exc: BaseException) -> None:
        """Log the loss of Redis once per outage, saying what the limiter does meanwhile."""
        if self._unreachable:
            return
        self._unreachable = True
        then = (
            "refusing API requests with 503 until it is back (on_redis_error = closed)"
            if self.on_redis_error == "closed"
            else "limiting each worker on its own until it is back (on_redis_error = open)"
        )
        # a bare TimeoutError is ours (asyncio.timeout): Redis took the connection but did not answer
        why = f"no answer within {self.timeout_s:g} s" if type(exc) is TimeoutError else type(exc).__name__
        log.warning("rate limiter: Redis is unreachable (%s); %s", why, then)
