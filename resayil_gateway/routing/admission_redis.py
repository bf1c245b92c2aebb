"""One waiting line per backend shared by every worker through Redis.

Per backend, three keys: a ZSET of running slots scored by lease expiry (ms, Redis time), a ZSET of waiting
tickets scored by ``-priority·2⁴⁰ + sequence`` (so higher priority first, then first come first served), and
a ZSET of the waiting tickets' lease expiries. Each worker renews the leases of its own tickets in the
background; a worker that dies (kill -9) stops renewing, and every script purges expired slots and tickets
before it looks at the line, so nothing it held survives its lease.

Freed slots are handed straight to the head of the line inside the script that frees them, which publishes
the grant on the shared broadcast channel; the waiting worker wakes at once (with a bounded fallback poll
in case a message is lost). The uncontended path is one script to acquire and one to release; the release
runs in the background so that the response does not wait for it. While the line has room (its depth at this
worker's latest reply, at most ``depth_max_age_s`` old, is below the limit: nobody waits), a finished
request's slot is kept for ``SPARE_S`` as a spare, and the worker's next request on that backend takes it
without a round trip; when the line is full, slots go back at once so that the head of the line gets them.
Scripts go through the state's :class:`~resayil_gateway.state.script_batch.ScriptBatch`: under load, the
calls of many requests (and their rate-limit checks) share one pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from .admission import Admission, queue_wait_exceeded, state_unavailable

if TYPE_CHECKING:
    from ..state import RedisState

log = logging.getLogger("resayil.admission")

GRANT_TOPIC = "queue.grant"
WAIT_TOPIC = "queue.wait"  # a request had to wait in a line: every worker gives back its spare slots there
# How long the slot of a finished request stays with its worker for the worker's next request on the same
# backend, when the line had room (nobody waiting) at the latest reply: under steady traffic a worker then
# takes and gives back slots without a round trip to Redis. Idle spares go back after this. Only backends that
# run at least SPARE_MIN_LIMIT requests at once keep spares: on a small line (a local model server running one
# to four requests) an idle spare would hold a slot someone else needs and make the line look busier to
# failover, and a round trip is nothing beside the seconds a model takes there.
SPARE_S = 0.05
SPARE_MIN_LIMIT = 8

# KEYS: running, waiting, leases, sequence. ARGV: limit, lease_ms, channel, then the script's own.
_PRELUDE = """
local running, waiting, leases, sequence = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limit, lease_ms, channel = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', running, '-inf', now)
local dead = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 1000)
if #dead > 0 then
  redis.call('ZREM', waiting, unpack(dead))
  redis.call('ZREM', leases, unpack(dead))
end
local function promote()
  local free = limit - redis.call('ZCARD', running)
  while free > 0 do
    local head = redis.call('ZPOPMIN', waiting)
    if #head == 0 then return end
    redis.call('ZREM', leases, head[1])
    redis.call('ZADD', running, now + lease_ms, head[1])
    redis.call('PUBLISH', channel, 'admission|queue.grant|' .. head[1])
    free = free - 1
  end
end
local function depth()
  return redis.call('ZCARD', running) + redis.call('ZCARD', waiting)
end
"""

# ARGV[4] ticket, ARGV[5] priority, ARGV[6] backend → {granted (1|0), depth}
_ACQUIRE = """
promote()
local ticket = ARGV[4]
if redis.call('ZCARD', waiting) == 0 and redis.call('ZCARD', running) < limit then
  redis.call('ZADD', running, now + lease_ms, ticket)
  return {1, depth()}
end
local order = redis.call('INCR', sequence)
redis.call('ZADD', waiting, -tonumber(ARGV[5]) * 1099511627776 + order, ticket)
redis.call('ZADD', leases, now + lease_ms, ticket)
redis.call('PUBLISH', channel, 'admission|queue.wait|' .. ARGV[6])
return {0, depth()}
"""

# ARGV[4] ticket → depth
_RELEASE = """
redis.call('ZREM', running, ARGV[4])
promote()
return depth()
"""

# ARGV[4] ticket → 0 left the line, 1 had just been granted (and gave it back), -1 unknown
_LEAVE = """
local ticket, outcome = ARGV[4], -1
if redis.call('ZREM', waiting, ticket) == 1 then
  redis.call('ZREM', leases, ticket)
  outcome = 0
elseif redis.call('ZREM', running, ticket) == 1 then
  outcome = 1
end
promote()
return outcome
"""

# ARGV[4] ticket → 1 granted, 0 still waiting, -1 unknown (its lease ran out)
_POLL = """
promote()
if redis.call('ZSCORE', running, ARGV[4]) then return 1 end
if redis.call('ZSCORE', waiting, ARGV[4]) then return 0 end
return -1
"""

# ARGV[4..] this worker's tickets on the backend → depth
_RENEW = """
for i = 4, #ARGV do
  local ticket = ARGV[i]
  if redis.call('ZSCORE', running, ticket) then
    redis.call('ZADD', running, 'XX', now + lease_ms, ticket)
  elseif redis.call('ZSCORE', leases, ticket) then
    redis.call('ZADD', leases, 'XX', now + lease_ms, ticket)
  end
end
promote()
return depth()
"""

_DEPTH = """
promote()
return depth()
"""


class RedisAdmission(Admission):
    """The waiting line of every worker, in Redis; ``max_concurrency`` holds for all workers together."""

    def __init__(
        self, state: RedisState, *, lease_s: float = 10.0, poll_s: float = 1.0, depth_max_age_s: float = 0.05
    ) -> None:
        super().__init__()
        self.depth_max_age_s = depth_max_age_s
        self._seen: dict[str, tuple[float, int]] = {}  # backend → (loop time, depth) from the latest script reply
        self.state = state
        self.lease_ms = max(1, int(lease_s * 1000))
        self.renew_every = lease_s / 3
        self.poll_s = poll_s
        self._instance = state.instance
        self._counter = itertools.count()
        self._keys: dict[str, list[str]] = {}
        self._tickets: dict[str, set[str]] = {}
        self._held: dict[str, int] = {}
        self._grants: dict[str, asyncio.Future[None]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Future[Any]] = set()
        self._spares: dict[str, list[str]] = {}
        redis = state.redis
        self._acquire = redis.register_script(_PRELUDE + _ACQUIRE)
        self._release = redis.register_script(_PRELUDE + _RELEASE)
        self._leave = redis.register_script(_PRELUDE + _LEAVE)
        self._poll = redis.register_script(_PRELUDE + _POLL)
        self._renew = redis.register_script(_PRELUDE + _RENEW)
        self._depth = redis.register_script(_PRELUDE + _DEPTH)
        state.on_broadcast(self._on_broadcast)

    # -- the line -----------------------------------------------------------------------------------------

    def _line_keys(self, backend: str) -> list[str]:
        keys = self._keys.get(backend)
        if keys is None:
            tag = "{" + backend + "}"  # one hash slot per line, so the scripts also run on a Redis Cluster
            keys = self._keys[backend] = [
                self.state.key("queue", tag, part) for part in ("running", "waiting", "leases", "sequence")
            ]
        return keys

    def _args(self, backend: str, *extra: Any) -> list[Any]:
        return [self.limits.get(backend, 1), self.lease_ms, self.state.channel, *extra]

    async def _run(self, script: Any, backend: str, *extra: Any) -> Any:
        try:
            return await self.state.scripts.run(script, self._line_keys(backend), self._args(backend, *extra))
        except RedisError as exc:  # our own state is down: a 503 to retry, never blamed on the backend
            raise state_unavailable() from exc

    @asynccontextmanager
    async def slot(self, backend: str, priority: int = 0, timeout: float = 30.0) -> AsyncIterator[None]:
        """Hold one of ``backend``'s slots for the body (see :meth:`Admission.slot`)."""
        tickets = self._tickets.setdefault(backend, set())
        spares = self._spares.get(backend)
        if spares and self._has_room(backend):
            ticket = spares.pop()  # already running in Redis, its lease renewed with this worker's others
        else:
            ticket = f"{self._instance}.{next(self._counter)}"
            tickets.add(ticket)
            try:
                await self._enter(backend, ticket, priority, timeout)
            except BaseException:
                tickets.discard(ticket)
                raise
        self._held[backend] = self._held.get(backend, 0) + 1
        try:
            yield
        finally:
            self._held[backend] -= 1
            if self._has_room(backend):
                self._spares.setdefault(backend, []).append(ticket)
                asyncio.get_running_loop().call_later(SPARE_S, self._give_back_spare, backend, ticket)
            else:
                self._release_now(backend, ticket)

    def _has_room(self, backend: str) -> bool:
        """True when this worker's latest reply, fresh enough, showed the line below its limit (nobody waiting)."""
        seen = self._seen.get(backend)
        limit = self.limits.get(backend, 1)
        return (
            limit >= SPARE_MIN_LIMIT
            and seen is not None
            and asyncio.get_running_loop().time() - seen[0] < self.depth_max_age_s
            and seen[1] < limit
        )

    def _give_back_spare(self, backend: str, ticket: str) -> None:
        spares = self._spares.get(backend, [])
        if ticket in spares:  # not taken by another request meanwhile
            spares.remove(ticket)
            self._release_now(backend, ticket)

    def _release_now(self, backend: str, ticket: str) -> None:
        self._tickets.get(backend, set()).discard(ticket)
        # Released in the background: the response does not wait for Redis (``drain`` waits for it). The
        # batch's future is watched by a callback rather than a task of its own: one less task per request.
        releasing = self.state.scripts(self._release, self._line_keys(backend), self._args(backend, ticket))
        self._releasing.add(releasing)
        releasing.add_done_callback(functools.partial(self._released, backend, ticket))

    async def _enter(self, backend: str, ticket: str, priority: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        # Registered before the script runs: a grant published before its reply is read is not missed.
        grant = self._grants[ticket] = loop.create_future()
        try:
            granted, depth = await self._run(self._acquire, backend, ticket, priority, backend)
            self._saw(backend, depth)
            if granted:
                return
            deadline = loop.time() + timeout
            while not await self._granted_within(grant, deadline - loop.time(), backend, ticket, priority):
                if loop.time() >= deadline:
                    raise queue_wait_exceeded(timeout)
        except BaseException:
            await asyncio.shield(self._give_back(self._leave, backend, ticket))
            raise
        finally:
            self._grants.pop(ticket, None)

    async def _granted_within(
        self, grant: asyncio.Future[None], remaining: float, backend: str, ticket: str, priority: int
    ) -> bool:
        """Wait for the grant message for up to a poll interval, then ask Redis directly."""
        if remaining <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(grant), min(remaining, self.poll_s))
            return True
        where = await self._run(self._poll, backend, ticket)
        if where == -1:  # our ticket's lease lapsed (a stalled loop): take a place again
            granted, _ = await self._run(self._acquire, backend, ticket, priority, backend)
            return bool(granted)
        return bool(where == 1)

    def _released(self, backend: str, ticket: str, releasing: asyncio.Future[Any]) -> None:
        self._releasing.discard(releasing)
        if releasing.cancelled():
            return
        exc = releasing.exception()
        if exc is not None:
            log.error("could not give back queue ticket %s on %s (%s); its lease will expire", ticket, backend, exc)
        else:
            self._saw(backend, releasing.result())

    async def _give_back(self, script: Any, backend: str, ticket: str) -> None:
        try:
            await self._run(script, backend, ticket)
        except Exception:
            log.exception("could not give back queue ticket %s on %s; its lease will expire", ticket, backend)

    def _on_broadcast(self, topic: str, value: str) -> None:
        if topic == GRANT_TOPIC:
            grant = self._grants.get(value)
            if grant is not None and not grant.done():
                grant.set_result(None)
        elif topic == WAIT_TOPIC:
            self._give_back_spares(value)

    def _give_back_spares(self, backend: str) -> None:
        spares = self._spares.get(backend)
        while spares:
            self._release_now(backend, spares.pop())

    # -- observing ----------------------------------------------------------------------------------------

    def _saw(self, backend: str, depth: int) -> None:
        self._seen[backend] = (asyncio.get_running_loop().time(), int(depth))

    async def depth(self, backend: str) -> int:
        """Requests waiting for or running on ``backend`` in every worker: what this worker's latest script
        reply said if it is younger than ``depth_max_age_s`` (busy workers read it for free), otherwise one
        round trip; this worker's idle spare slots are not counted."""
        seen = self._seen.get(backend)
        if seen is not None and asyncio.get_running_loop().time() - seen[0] < self.depth_max_age_s:
            depth = seen[1]
        else:
            depth = int(await self._run(self._depth, backend))
            self._saw(backend, depth)
        return max(0, depth - len(self._spares.get(backend, ())))

    def running(self, backend: str) -> int:
        """Requests this process runs on ``backend`` now."""
        return self._held.get(backend, 0)

    # -- leases -------------------------------------------------------------------------------------------

    async def renew(self) -> None:
        """Extend the leases of this process's slots and tickets, and purge those of dead workers."""
        for backend in list(self.limits):
            await self._run(self._renew, backend, *self._tickets.get(backend, ()))

    async def start(self) -> None:
        """Renew leases in a task of its own (the application runs :meth:`run` in a cleanup context)."""
        if self._renewer is None:
            self._renewer = asyncio.create_task(self.run(), name="resayil-admission-leases")

    async def run(self) -> None:
        """Renew this process's leases every third of a lease, until cancelled."""
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                await self.renew()
            except Exception:
                log.exception("renewing queue leases failed; retrying in %.1f s", self.renew_every)

    async def drain(self) -> None:
        """Give back the spare slots now and wait until every slot this process gave back is released in
        Redis."""
        for backend in list(self._spares):
            self._give_back_spares(backend)
        while self._releasing:
            await asyncio.gather(*list(self._releasing), return_exceptions=True)

    async def close(self) -> None:
        """Finish releases, stop renewing (any slot still held then expires with its lease)."""
        await self.drain()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
