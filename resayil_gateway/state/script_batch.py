"""Redis script calls made during one event-loop iteration, sent together as one pipeline.

Every API request runs two or three small Lua scripts (the rate limit, taking and giving back a queue slot).
Sent one by one, each costs a pooled connection, a write and a read: about 50 µs of the worker's CPU apiece
in redis-py. Under load many requests reach a script in the same loop iteration, so :class:`ScriptBatch`
queues the calls and sends whatever has gathered at the next iteration as one non-transactional pipeline:
one connection, one write, one read for all of them. One batch is in flight at a time: calls made meanwhile
wait for its reply (a fraction of a millisecond) and then go together, so the busier the worker, the fuller
each batch. An idle worker sends a batch of one a single loop iteration later than it would have. A batch
unanswered for :data:`SCRIPT_TIMEOUT_S` is given up (its connection dropped), so a hung Redis never stalls
the batches after it.

Since one batch is in flight at a time, one connection serves them all: the batch keeps one of the pool's
connections and writes and reads it directly, which costs about a third less CPU per round trip than redis-py's
``execute_command`` (no pool checkout, no retry wrapper per call). A connection found broken when a batch is
sent (Redis restarted, the server closed it while idle) is replaced once, as redis-py's own retry would; a
batch given up or failing while its replies are read drops its connection, so no reply is ever read by the
wrong batch.

A script unknown to the server (``NOSCRIPT`` after a restart or ``SCRIPT FLUSH``) is loaded and its calls
re-sent; any other failure of the pipeline is raised to every caller of the batch, as the same redis-py
exception a direct call would have raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.connection import AbstractConnection, ConnectionPool
    from redis.commands.core import AsyncScript

_Call = tuple["AsyncScript", Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]

# A request-path script unanswered this long means Redis is hung (a healthy one answers in a millisecond):
# the caller gets redis-py's TimeoutError, handled like Redis unreachable (a 503 to retry), never a hang.
SCRIPT_TIMEOUT_S = 2.0


class _BrokeBeforeAnyReply(Exception):
    """The batch's connection broke before any reply was read: the batch may be sent again on a fresh one."""

    def __init__(self, error: RedisConnectionError) -> None:
        super().__init__(str(error))
        self.error = error


class ScriptBatch:
    """Runs scripts registered on a Redis client, batching the calls of one loop iteration."""

    def __init__(self, client: Callable[[], Redis]) -> None:
        self._client = client  # asked at each send: the state may replace its client when it restarts
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._scheduled = False  # a send of the pending calls is scheduled for the next loop iteration
        self._held: tuple[ConnectionPool, AbstractConnection] | None = None  # the batches' own connection

    def __call__(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one call of ``script``; the returned future resolves to its reply (or raises its error)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, reply))
        if not self._scheduled and not self._sending:
            self._scheduled = True
            loop.call_soon(self._send_pending)
        return reply

    async def run(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any], timeout_s: float | None = None
    ) -> Any:
        """Run one call of ``script`` and return its reply; raises redis-py's ``TimeoutError`` when Redis has not
        answered within ``timeout_s`` (default :data:`SCRIPT_TIMEOUT_S`; the batch then ignores the reply,
        should it come)."""
        timeout_s = SCRIPT_TIMEOUT_S if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await self(script, keys, args)
        except TimeoutError as exc:
            raise RedisTimeoutError(f"Redis did not answer within {timeout_s:g} s") from exc

    def _send_pending(self) -> None:
        self._scheduled = False
        if self._sending or not self._pending:
            return
        calls, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._pending and not self._scheduled:
            # On the next iteration: the callers the replies just woke may add to this batch first.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send_pending)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            try:
                async with asyncio.timeout(SCRIPT_TIMEOUT_S):
                    replies = await self._pipeline(calls)
                    unknown = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                    if unknown:
                        for script in {calls[i][0].script for i in unknown}:
                            await self._client().script_load(script)
                        again = await self._pipeline([calls[i] for i in unknown])
                        for i, reply in zip(unknown, again, strict=True):
                            replies[i] = reply
            except TimeoutError as exc:
                raise RedisTimeoutError(f"Redis did not answer within {SCRIPT_TIMEOUT_S:g} s") from exc
        except BaseException as exc:
            for *_, future in calls:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (*_, future), reply in zip(calls, replies, strict=True):
            if future.done():  # its caller gave up waiting (cancelled or timed out)
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, calls: Sequence[_Call]) -> list[Any]:
        commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args, _ in calls]
        try:
            return await self._round_trip(commands)
        except _BrokeBeforeAnyReply:
            # The server closed the connection while it was idle, or restarted: once more on a fresh one, as
            # redis-py's own retry would. A connection that breaks after some replies fails the batch.
            try:
                return await self._round_trip(commands)
            except _BrokeBeforeAnyReply as again:
                raise again.error from None

    async def _round_trip(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        connection = await self._connection()
        replies: list[Any] = []
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # the script's own error (or NOSCRIPT) is its caller's answer
                    replies.append(exc)
            return replies
        except BaseException as exc:
            await self._drop(connection)  # replies left unread must never reach the next batch
            if not replies and isinstance(exc, RedisConnectionError):
                raise _BrokeBeforeAnyReply(exc) from exc
            raise

    async def _connection(self) -> AbstractConnection:
        """The batches' connection, taken from the client's current pool (a restarted state has a new one)."""
        pool = self._client().connection_pool
        if self._held is None or self._held[0] is not pool:
            self._held = (pool, await pool.get_connection())
        return self._held[1]

    async def _drop(self, connection: AbstractConnection) -> None:
        if self._held is not None and self._held[1] is connection:
            pool, _ = self._held
            self._held = None
            await connection.disconnect(nowait=True)
            await pool.release(connection)

    async def drain(self) -> None:
        """Wait until every call made so far is answered (or has failed)."""
        while self._sending or self._pending:
            if self._sending:
                await asyncio.gather(*list(self._sending), return_exceptions=True)
            else:
                self._send_pending()
