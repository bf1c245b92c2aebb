"""How many PostgreSQL connections this deployment may open, against what the server allows.

Each gateway process may hold up to ``pool_size // 2 + 2`` connections for synchronous writes and reads,
``pool_size + 2`` for the request path's batched writes, and ``hot_pool_size`` for holds and settles. Several
gateways (workers, machines) share one ``max_connections``: ``resayil serve`` says at start when its own
share would not fit beside the connections already open, rather than failing later under load with
``TooManyConnectionsError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text

from .engine import Store


def connections_per_process(store: Store) -> int:
    """The most connections one gateway process opens (its three pools full)."""
    return (max(2, store.pool_size // 2) + 2) + (store.pool_size + 2) + store.hot_pool_size


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """This deployment's need beside what PostgreSQL allows and what others already use."""

    needed: int
    max_connections: int
    reserved: int
    in_use: int

    @property
    def available(self) -> int:
        """Connections ordinary users may still open."""
        return self.max_connections - self.reserved - self.in_use

    @property
    def fits(self) -> bool:
        """True when this deployment's pools can all fill up without hitting ``max_connections``."""
        return self.needed <= self.available

    def describe(self, workers: int) -> str:
        """One line for the log."""
        return (
            f"PostgreSQL connection budget: {workers} worker(s) may open up to {self.needed} connections; the "
            f"server allows {self.max_connections} ({self.reserved} reserved for superusers, {self.in_use} open "
            f"now, {self.available} free). Lower gateway.db_pool_size / db_hot_pool_size or raise max_connections."
        )


async def connection_budget(store: Store, workers: int) -> ConnectionBudget | None:
    """The budget for ``workers`` processes on ``store`` (None on SQLite, which has no such limit)."""
    if store.is_sqlite:
        return None
    async with store.connect() as conn:
        max_connections = int(await conn.scalar(text("SHOW max_connections")) or 0)
        reserved = int(await conn.scalar(text("SHOW superuser_reserved_connections")) or 0)
        in_use = int(
            await conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")) or 0
        )
    # the connection asking is ours and closes with the preparing gateway
    return ConnectionBudget(connections_per_process(store) * workers, max_connections, reserved, max(0, in_use - 1))
