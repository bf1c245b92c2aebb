"""Counting attempts per IP and per account in a sliding window, shared through Redis when configured."""

from __future__ import annotations

import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resayil_gateway.gateway import Gateway


class AttemptThrottle:
    """``limit`` attempts per key per ``window_s``; more are refused until old ones leave the window.

    With Redis every worker counts in one sorted set per key; otherwise this process keeps the times.
    """

    def __init__(self, gateway: Gateway, name: str, limit: int, window_s: int) -> None:
        self._gateway = gateway
        self._name = name
        self.limit = limit
        self.window_s = window_s
        self._redis: Any = getattr(gateway.state, "redis", None)
        self._local: dict[str, deque[float]] = {}

    def _now(self) -> float:
        return self._gateway.clock.now().timestamp()

    def _key(self, key: str) -> str:
        return self._gateway.state.key("portal", self._name, key)

    async def blocked(self, *keys: str) -> bool:
        """True when any of ``keys`` has used up its attempts."""
        for key in keys:
            if await self._count(key) >= self.limit:
                return True
        return False

    async def record(self, *keys: str) -> None:
        """Count one attempt against each key."""
        now = self._now()
        for key in keys:
            if self._redis is not None:
                name = self._key(key)
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.zadd(name, {f"{now:.6f}:{secrets.token_hex(4)}": now})
                    pipe.expire(name, self.window_s)
                    await pipe.execute()
            else:
                self._local.setdefault(key, deque()).append(now)

    async def clear(self, *keys: str) -> None:
        """Forget the attempts of ``keys`` (a successful login)."""
        for key in keys:
            if self._redis is not None:
                await self._redis.delete(self._key(key))
            else:
                self._local.pop(key, None)

    async def _count(self, key: str) -> int:
        since = self._now() - self.window_s
        if self._redis is not None:
            name = self._key(key)
            await self._redis.zremrangebyscore(name, "-inf", since)
            return int(await self._redis.zcard(name))
        times = self._local.get(key)
        if not times:
            return 0
        while times and times[0] <= since:
            times.popleft()
        return len(times)
