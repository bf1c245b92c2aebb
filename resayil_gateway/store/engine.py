"""The async engine: SQLite through aiosqlite by default, PostgreSQL through asyncpg in production.

SQLite runs one connection per process with ``BEGIN IMMEDIATE`` transactions, WAL and a busy timeout, so a
CLI command writing beside a running server waits its turn instead of failing. PostgreSQL gets two pools:
``engine`` commits synchronously (payments, grants, adjustments); ``fast_engine`` commits asynchronously and
serves only the request path (holds, charges, usage rows), trading a bounded window of charges a database
crash could lose (about three ``wal_writer_delay``, 0.6 s by default) for a WAL flush per request. Credits
granted are never in that window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

if TYPE_CHECKING:
    import asyncpg

    from .hot_pool import HotConnections


def _sqlite_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _server_settings(synchronous_commit: bool) -> dict[str, str]:
    settings = {"application_name": "resayil-gateway"}
    if not synchronous_commit:
        settings["synchronous_commit"] = "off"
    return settings


def _tls_argument(url: str) -> dict[str, Any]:
    """No TLS negotiation on loopback or a Unix socket unless the URL asks for it (``?ssl=…``); elsewhere
    asyncpg's default (try TLS first) stands."""
    parsed = make_url(url)
    if "ssl" in parsed.query or "sslmode" in parsed.query:
        return {}
    host = parsed.host or parsed.query.get("host") or ""
    local = not host or str(host).startswith("/") or host in ("localhost", "127.0.0.1", "::1")
    return {"ssl": False} if local else {}


def _postgres_engine(url: str, synchronous_commit: bool, pool_size: int) -> AsyncEngine:
    # A steady pool: connections opened under a burst are kept, not closed and reopened (each costs a fork in
    # PostgreSQL and a TLS probe here).
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"server_settings": _server_settings(synchronous_commit), **_tls_argument(url)},
    )


class Store:
    """The database: ``engine`` for everything, ``fast_engine`` for request-path writes (see module doc)."""

    def __init__(self, url: str, pool_size: int = 8, hot_pool_size: int = 24) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.pool_size = pool_size
        self.hot_pool_size = hot_pool_size
        self._hot: HotConnections | None = None
        self._engine: AsyncEngine | None = None
        self._fast_engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The engine for everything (created on first use: building a store opens nothing)."""
        if self._engine is None:
            if self.is_sqlite:
                self._engine = _sqlite_engine(self.url)
            else:
                self._engine = _postgres_engine(
                    self.url, synchronous_commit=True, pool_size=max(2, self.pool_size // 2)
                )
        return self._engine

    @property
    def fast_engine(self) -> AsyncEngine:
        """The request path's engine (asynchronous commit on PostgreSQL; the same engine on SQLite)."""
        if self._fast_engine is None:
            if self.is_sqlite:
                self._fast_engine = self.engine
            else:
                self._fast_engine = _postgres_engine(self.url, synchronous_commit=False, pool_size=self.pool_size)
        return self._fast_engine

    def insert(self, table: Table) -> Any:
        """An ``INSERT`` in this database's dialect, so it can take ``on_conflict_do_nothing`` /
        ``on_conflict_do_update`` (the dialect's module loads here: SQLite never loads PostgreSQL's)."""
        if self.is_sqlite:
            from sqlalchemy.dialects import sqlite

            return sqlite.insert(table)
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that commits synchronously (money in: grants, payments, adjustments)."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def begin_fast(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the request-path pool (holds, charges, usage)."""
        async with self.fast_engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads."""
        async with self.engine.connect() as conn:
            yield conn

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def hot(self) -> HotConnections:
        """The request path's own connections (PostgreSQL only): the hold and the settle are one stored-function
        call each, sent straight through asyncpg as a prepared statement with asynchronous commit."""
        if self._hot is None:
            import asyncpg  # PostgreSQL only: a SQLite gateway never loads the driver

            from .hot_pool import HotConnections

            dsn = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
            settings = _server_settings(synchronous_commit=False)
            tls = _tls_argument(self.url)

            async def connect() -> asyncpg.Connection:
                return await asyncpg.connect(dsn, server_settings=settings, **tls)

            self._hot = HotConnections(connect, self.hot_pool_size)
        return self._hot

    async def close_hot(self) -> None:
        """Close the request path's own connections (they reopen on demand)."""
        if self._hot is not None:
            hot, self._hot = self._hot, None
            await hot.close()

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.close_hot()
        engine, fast = self._engine, self._fast_engine
        self._engine = self._fast_engine = None
        if engine is not None:
            await engine.dispose()
        if fast is not None and fast is not engine:
            await fast.dispose()

    def describe(self) -> str:
        """The URL without its password, safe to log."""
        return make_url(self.url).render_as_string(hide_password=True)
