"""Run Alembic migrations programmatically: ``resayil db upgrade`` and ``serve`` call :func:`upgrade`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from .engine import Store

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (~11 MB resident) is imported only when migrating, never by a process that just serves.

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade(sync_connection: Any, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = sync_connection
    command.upgrade(config, revision)


async def upgrade(store: Store, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: the newest). Safe to run from several processes at once
    on PostgreSQL: an advisory lock serialises them."""
    async with store.engine.begin() as conn:
        if not store.is_sqlite:
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7264019)")
        await conn.run_sync(_upgrade, revision)


async def current_revision(conn: AsyncConnection) -> str | None:
    """The schema's current revision, or None when it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    def _read(sync_connection: Any) -> str | None:
        return MigrationContext.configure(sync_connection).get_current_revision()

    return await conn.run_sync(_read)
