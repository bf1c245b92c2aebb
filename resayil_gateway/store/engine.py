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
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


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


def _postgres_engine(url: str, synchronous_commit: bool, pool_size: int) -> AsyncEngine:
    settings = {"application_name": "resayil-gateway"}
    if not synchronous_commit:
        settings["synchronous_commit"] = "off"
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"server_settings": settings},
    )


class Store:
    """The database: ``engine`` for everything, ``fast_engine`` for request-path writes (see module doc)."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url)
            self.fast_engine = self.engine
        else:
            self.engine = _postgres_engine(url, synchronous_commit=True, pool_size=max(2, pool_size // 2))
            self.fast_engine = _postgres_engine(url, synchronous_commit=False, pool_size=pool_size)
        self._single = self.fast_engine.execution_options(isolation_level="AUTOCOMMIT")

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
    async def single(self) -> AsyncIterator[AsyncConnection]:
        """A request-path connection for one self-contained statement (a stored function): no BEGIN or COMMIT
        round trips around it. PostgreSQL only; SQLite callers use :meth:`begin_fast`."""
        async with self._single.connect() as conn:
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

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        if self.fast_engine is not self.engine:
            await self.fast_engine.dispose()

    def describe(self) -> str:
        """The URL without its password, safe to log."""
        return make_url(self.url).render_as_string(hide_password=True)
