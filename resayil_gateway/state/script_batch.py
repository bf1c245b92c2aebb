"""Redis script calls made during one event-loop iteration, sent together as one pipeline.

Every API request runs two or three small Lua scripts (the rate limit, taking and giving back a queue slot).
Sent one by one, each costs a pooled connection, a write and a read: about 50 µs of the worker's CPU apiece
in redis-py. Under load many requests reach a script in the same loop iteration, so :class:`ScriptBatch`
queues the calls and sends whatever has gathered at the next iteration as one non-transactional pipeline:
one connection, one write, one read for all of them. Replies arrive together, so the requests they wake tend
to reach their next script together too. An idle worker sends a batch of one a single loop iteration later
than it would have.

A script unknown to the server (``NOSCRIPT`` after a restart or ``SCRIPT FLUSH``) is loaded and its calls
re-sent; any other failure of the pipeline is raised to every caller of the batch, as the same redis-py
exception a direct call would have raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

_Call = tuple["AsyncScript", Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]

# A request-path script unanswered this long means Redis is hung (a healthy one answers in a millisecond):
# the caller gets redis-py's TimeoutError, handled like Redis unreachable (a 503 to retry), never a hang.
SCRIPT_TIMEOUT_S = 2.0


class ScriptBatch:
    """Runs scripts registered on a Redis client, batching the calls of one loop iteration."""

    def __init__(self, client: Callable[[], Redis]) -> None:
        self._client = client  # asked at each send: the state may replace its client when it restarts
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    def __call__(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one call of ``script``; the returned future resolves to its reply (or raises its error)."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._send_pending)
        self._pending.append((script, keys, args, reply))
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
        calls, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            replies = await self._pipeline(calls)
            unknown = [call for call, reply in zip(calls, replies, strict=True) if isinstance(reply, NoScriptError)]
            if unknown:
                for script in {call[0].script for call in unknown}:
                    await self._client().script_load(script)
                for call, reply in zip(unknown, await self._pipeline(unknown), strict=True):
                    replies[calls.index(call)] = reply
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
        async with self._client().pipeline(transaction=False) as pipe:
            for script, keys, args, _ in calls:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return list(await pipe.execute(raise_on_error=False))

    async def drain(self) -> None:
        """Wait for the batches already sent."""
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)
