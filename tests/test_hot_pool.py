"""The request path's own PostgreSQL connections: a size cap, reuse, and no reuse of a broken connection."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from resayil_gateway.store import Store


@pytest.fixture
async def hot(stack_info):
    if stack_info.name != "postgres":
        pytest.skip("PostgreSQL only: SQLite runs the request path in-process")
    store = Store(stack_info.database_url, hot_pool_size=2)
    yield store
    await store.dispose()


async def test_never_opens_more_than_its_size_and_reuses_connections(hot):
    pool = await hot.hot()
    pids = await asyncio.gather(*(pool.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.01)") for _ in range(12)))
    assert len(set(pids)) <= 2
    assert len(set(await asyncio.gather(*(pool.fetchval("SELECT pg_backend_pid()") for _ in range(4))))) <= 2


async def test_a_statement_error_keeps_the_connection_but_a_cancelled_call_discards_it(hot):
    pool = await hot.hot()
    first = await pool.fetchval("SELECT pg_backend_pid()")
    with pytest.raises(asyncpg.PostgresError):
        await pool.fetchval("SELECT 1/0")
    assert await pool.fetchval("SELECT pg_backend_pid()") == first
    call = asyncio.ensure_future(pool.fetchval("SELECT pg_sleep(5)"))
    await asyncio.sleep(0.1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await pool.fetchval("SELECT 41 + 1") == 42  # a fresh connection takes its place


async def test_waiters_are_served_when_a_connection_comes_back(hot):
    pool = await hot.hot()
    results = await asyncio.gather(*(pool.fetchrow("SELECT $1::int AS n", i) for i in range(20)))
    assert [row["n"] for row in results] == list(range(20))
