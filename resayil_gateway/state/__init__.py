"""Shared fast state between workers: in-process for one worker, Redis for many (one interface).

Today it carries invalidations (a revoked key, a disabled account) to every worker. Rate-limit windows,
queue depths and the cloud budget counter join it as those capabilities land.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

log = logging.getLogger("resayil.state")

Listener = Callable[[str, str], None]


class SharedState(ABC):
    """What every worker sees alike."""

    def __init__(self, prefix: str = "resayil") -> None:
        self._listeners: list[Listener] = []
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        """A namespaced Redis key (``prefix:part:part``): deployments and test runs sharing one Redis never
        see each other's keys."""
        return ":".join((self.prefix, *parts))

    def on_broadcast(self, listener: Listener) -> None:
        """Call ``listener(topic, value)`` for every broadcast from another worker."""
        self._listeners.append(listener)

    def _deliver(self, topic: str, value: str) -> None:
        for listener in self._listeners:
            try:
                listener(topic, value)
            except Exception:
                log.exception("broadcast listener failed for %s", topic)

    async def start(self) -> None:
        """Connect and start listening."""

    async def close(self) -> None:
        """Stop listening and disconnect."""

    @abstractmethod
    async def broadcast(self, topic: str, value: str) -> None:
        """Tell every other worker (this one handles its own change directly)."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise when the shared state cannot be reached."""

    @property
    def shared(self) -> bool:
        """True when several workers can share this state."""
        return False


class LocalState(SharedState):
    """One worker: nothing to tell anyone."""

    async def broadcast(self, topic: str, value: str) -> None:
        """Nothing to do: there is no other worker."""

    async def ping(self) -> None:
        """Always reachable."""


class RedisState(SharedState):
    """Many workers on many machines, through one Redis."""

    def __init__(self, url: str, instance: str, prefix: str = "resayil") -> None:
        super().__init__(prefix)
        self.channel = self.key("broadcast")
        from redis.asyncio import Redis

        self.url = url
        self.instance = instance
        self.redis = Redis.from_url(url, decode_responses=True, health_check_interval=30)
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def shared(self) -> bool:
        """Redis is shared by design."""
        return True

    async def start(self) -> None:
        """Subscribe to the broadcast channel before serving, so no invalidation is missed."""
        await self.redis.ping()
        self._listener = asyncio.create_task(self._listen(), name="resayil-broadcast-listener")
        await asyncio.wait_for(self._ready.wait(), 10)

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._ready.set()
                async for message in pubsub.listen():
                    sender, _, rest = str(message.get("data", "")).partition("|")
                    topic, _, value = rest.partition("|")
                    if sender != self.instance:
                        self._deliver(topic, value)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lost the Redis broadcast subscription; reconnecting in 1 s")
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def broadcast(self, topic: str, value: str) -> None:
        """Publish to every subscribed worker."""
        await self.redis.publish(self.channel, f"{self.instance}|{topic}|{value}")

    async def ping(self) -> None:
        """Raise when Redis does not answer."""
        await self.redis.ping()

    async def close(self) -> None:
        """Stop the listener and close the connection pool."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self.redis.aclose()


def make_state(redis_url: str, instance: str, prefix: str = "resayil") -> SharedState:
    """Redis when a URL is configured, otherwise in-process; every Redis key starts with ``prefix``."""
    return RedisState(redis_url, instance, prefix) if redis_url else LocalState(prefix)
