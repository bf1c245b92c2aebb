"""A minimal pool of asyncpg connections for the request path's two stored-function calls.

asyncpg's own pool resets and re-arms timers on every release (a round trip and ~0.1 ms of CPU per request
here); these connections only ever run ``resayil_reserve`` and ``resayil_settle``, which leave no session state,
so taking and returning one is a list pop and a list append. A connection that fails or whose call is
cancelled mid-flight is discarded, never reused. Both calls are idempotent (keyed by the hold id), so a call
whose connection was lost (PostgreSQL restarted, a connection killed) is sent once more on a fresh connection.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

Connect = Callable[[], Awaitable[asyncpg.Connection]]
CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # the server shut the session down (restart, terminate)
    asyncpg.InterfaceError,
    ConnectionError,
)


class _StatementError(Exception):
    """The statement itself failed (the connection is fine): raised to the caller as is, never retried."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class HotConnections:
    """Up to ``size`` connections, opened on demand, handed to callers in turn."""

    def __init__(self, connect: Connect, size: int) -> None:
        self._connect = connect
        self._size = max(1, size)
        self._open = 0
        self._idle: list[asyncpg.Connection] = []
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection]] = collections.deque()
        self._closed = False

    async def fetchval(self, query: str, *args: Any) -> Any:
        """The first column of the first row of ``query``."""
        return await self._run("fetchval", query, args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        """The first row of ``query`` (a record), or None."""
        return await self._run("fetchrow", query, args)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Every row of ``query`` (records)."""
        rows: list[Any] = await self._run("fetch", query, args)
        return rows

    async def _run(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        try:
            return await self._run_once(method, query, args)
        except _StatementError as failed:
            raise failed.error from None
        except Exception:  # the connection broke, not the statement: once more on a fresh one
            try:
                return await self._run_once(method, query, args)
            except _StatementError as failed:
                raise failed.error from None

    async def _run_once(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        conn = await self._idle_or_new()
        try:
            result = await getattr(conn, method)(query, *args)
        except BaseException as exc:
            if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, CONNECTION_LOST):
                self._give_back(conn)  # an error from the statement: the connection itself is fine
                raise _StatementError(exc) from None
            self._discard(conn)
            raise
        self._give_back(conn)
        return result

    async def _idle_or_new(self) -> asyncpg.Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self._discard(conn)  # the server closed it while it was idle
        return await self._take()

    async def _take(self) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the hot connection pool is closed")
        if self._open < self._size:
            self._open += 1
            try:
                return await self._connect()
            except BaseException:
                self._open -= 1
                raise
        waiter: asyncio.Future[asyncpg.Connection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_back(waiter.result())
            raise

    def _give_back(self, conn: asyncpg.Connection) -> None:
        if conn.is_closed() or self._closed:
            self._discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn: asyncpg.Connection) -> None:
        conn.terminate()
        self._open -= 1
        while self._waiters:  # someone waiting may now open a fresh connection
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                task = asyncio.ensure_future(self._connect())
                task.add_done_callback(functools.partial(self._hand_over, waiter=waiter))
                return

    def _hand_over(
        self, opened: asyncio.Future[asyncpg.Connection], waiter: asyncio.Future[asyncpg.Connection]
    ) -> None:
        if opened.cancelled() or opened.exception() is not None:
            self._open -= 1
            if not waiter.done():
                waiter.set_exception(opened.exception() or asyncio.CancelledError())
            return
        if waiter.done():
            self._give_back(opened.result())
        else:
            waiter.set_result(opened.result())

    async def close(self) -> None:
        """Close every idle connection; connections in use are closed as they come back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._open -= 1
            await conn.close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the hot connection pool is closed"))
