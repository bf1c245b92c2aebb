"""The suite's own stacks never hang the run: a transaction an earlier test left open on PostgreSQL is ended
(and named) before the next test empties the tables, instead of making it wait for ever."""

from __future__ import annotations

import time

import asyncpg
import pytest

from resayil_gateway.testing import _on_store, truncate_all


@pytest.mark.parametrize("stack", ["postgres"])
async def test_a_transaction_left_open_does_not_hang_the_next_tests_cleanup(stack_info, capsys) -> None:
    dsn = stack_info.database_url.replace("postgresql+asyncpg://", "postgresql://")
    leftover = await asyncpg.connect(dsn)
    try:
        await leftover.execute("BEGIN")
        await leftover.execute("LOCK TABLE accounts IN ACCESS SHARE MODE")  # what a half-done read holds
        started = time.monotonic()
        await _on_store(stack_info.database_url, truncate_all)
        assert time.monotonic() - started < 15
        assert "ending connections an earlier test left open" in capsys.readouterr().err
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await leftover.fetchval("SELECT 1")
    finally:
        leftover.terminate()
