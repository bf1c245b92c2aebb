"""Shared fast state between workers: in-process for one worker, Redis for many (one interface).

Today it carries invalidations (a revoked key, a disabled account) to every worker. Rate-limit windows,
queue depths and the cloud budget counter join it as those capabilities land.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .script_batch import ScriptBatch

log = logging.getLogger("resayil.state")

Listener = Callable[[str, str], None]
HEARTBEAT_S = 1.0  # how often the broadcast subscription proves itself alive
CLOSE_WAIT_S = 5.0  # how long closing waits for the listener to stop before leaving it behind


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

    @property
    def channel_alive(self) -> bool:
        """True while broadcasts from other workers are sure to arrive (always, with one worker)."""
        return True


class LocalState(SharedState):
    """One worker: nothing to tell anyone."""

    async def broadcast(self, topic: str, value: str) -> None:
        """Nothing to do: there is no other worker."""

    async def ping(self) -> None:
        """Always reachable."""


REDIS_MAX_CONNECTIONS = 512
REDIS_POOL_WAIT_S = 5.0


def redis_client(url: str) -> Redis:
    """A client whose pool waits (up to ``REDIS_POOL_WAIT_S``) for a free connection when all are busy:
    redis-py's default pool raises past 100 concurrent commands, which one worker reaches as soon as a few
    hundred requests are admitted at once (every command holds a connection until its reply)."""
    from redis.asyncio import BlockingConnectionPool, Redis  # only where Redis is configured (~6 MB resident)

    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_S,
    )
    return Redis.from_pool(pool)


class RedisState(SharedState):
    """Many workers on many machines, through one Redis."""

    def __init__(self, url: str, instance: str, prefix: str = "resayil") -> None:
        super().__init__(prefix)
        self.channel = self.key("broadcast")
        self._wake_channel = self.key("wake", instance)  # closing ends this worker's listener through it
        self.url = url
        self.instance = instance
        self.redis = redis_client(url)
        from .script_batch import ScriptBatch  # loads redis: only where Redis is configured

        # Scripts on the request path (rate limit, queue slots) go through one batch per event-loop iteration.
        self.scripts: ScriptBatch = ScriptBatch(lambda: self.redis)
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._alive_until = 0.0
        self._closing = False

    @property
    def shared(self) -> bool:
        """Redis is shared by design."""
        return True

    async def start(self) -> None:
        """Subscribe to the broadcast channel before serving, so no invalidation is missed."""
        self._closing = False
        await self.redis.ping()
        self._listener = asyncio.create_task(self._listen(), name="resayil-broadcast-listener")
        await asyncio.wait_for(self._ready.wait(), 10)

    @property
    def channel_alive(self) -> bool:
        """True while the subscription has been seen working within the last two heartbeats."""
        return time.monotonic() < self._alive_until

    async def _listen(self) -> None:
        while not self._closing:  # set by _stop_listener
            pubsub = self.redis.pubsub(ignore_subscribe_messages=False)
            try:
                await pubsub.subscribe(self.channel, self._wake_channel)
                await self._relay(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._alive_until = 0.0
                log.error("lost the Redis broadcast subscription (%s); reconnecting in 1 s", type(exc).__name__)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _relay(self, pubsub: Any) -> None:
        """Deliver broadcasts; a PING on the subscribed connection every heartbeat proves it alive (its PONG
        arrives as a message), so a silent network failure is noticed within two heartbeats."""
        next_ping = 0.0
        while not self._closing:
            now = time.monotonic()
            if now >= next_ping:
                await pubsub.ping()
                next_ping = now + HEARTBEAT_S
            message = await pubsub.get_message(timeout=HEARTBEAT_S)
            if message is None:
                continue
            # Anything read on the subscribed connection proves it alive. The reply to our PING takes a
            # different shape per protocol (a ``pong`` message on RESP2; on RESP3, redis-py's default since
            # 8.0, a plain "PONG" that redis-py hands over as a message of type "P"), so none is matched.
            self._alive_until = time.monotonic() + 2 * HEARTBEAT_S
            # Serving starts once Redis has confirmed the subscription (the first reply read), not when it was
            # merely sent: a broadcast published in between would be missed, and the channel not yet alive.
            self._ready.set()
            if message.get("type") != "message" or message.get("channel") != self.channel or message["data"] == "ping":
                continue
            sender, _, rest = str(message.get("data", "")).partition("|")
            topic, _, value = rest.partition("|")
            if sender != self.instance:
                self._deliver(topic, value)

    async def broadcast(self, topic: str, value: str) -> None:
        """Publish to every subscribed worker."""
        await self.redis.publish(self.channel, f"{self.instance}|{topic}|{value}")

    async def ping(self) -> None:
        """Raise when Redis does not answer."""
        await self.redis.ping()

    async def _stop_listener(self, listener: asyncio.Task[None]) -> None:
        """End the listener between two reads: the flag, then a message on this worker's wake channel so it
        sees the flag at once. Cancelling it inside redis-py's read is only the fallback (Redis unreachable or
        hung), and every wait is bounded: a listener that does not stop must not hang shutdown."""
        self._closing = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self.redis.publish(self._wake_channel, "")
        # wait, not wait_for: waiting must not cancel it
        await asyncio.wait([listener], timeout=2 * HEARTBEAT_S)
        if not listener.done():
            listener.cancel()
            await asyncio.wait([listener], timeout=CLOSE_WAIT_S)
        if not listener.done():
            log.warning("the Redis broadcast listener did not stop within %g s; left behind", CLOSE_WAIT_S)

    async def close(self) -> None:
        """Stop the listener and close the connection pool."""
        await self.scripts.drain()
        if self._listener is not None:
            await self._stop_listener(self._listener)
        await self.redis.aclose()
        # a fresh client (opening nothing) so the state can start again, on another event loop
        self.redis = redis_client(self.url)
        self._listener = None
        self._ready = asyncio.Event()
        self._alive_until = 0.0


def make_state(redis_url: str, instance: str, prefix: str = "resayil") -> SharedState:
    """Redis when a URL is configured, otherwise in-process; every Redis key starts with ``prefix``."""
    return RedisState(redis_url, instance, prefix) if redis_url else LocalState(prefix)
