"""Persistence: the schema, the async engine (SQLite or PostgreSQL) and Alembic migrations."""

from .engine import Store
from .migrate import upgrade

__all__ = ["Store", "upgrade"]
