"""The audit trail: who did what to whom, written inside the transaction of the change it records."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from .tables import audit


async def record_audit(
    conn: AsyncConnection,
    at: datetime,
    actor: str,
    action: str,
    target: str = "",
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Add an audit row on ``conn``: it commits, or rolls back, with the change it describes."""
    await conn.execute(
        insert(audit).values(actor=actor, action=action, target=target, detail=dict(detail or {}), created_at=at)
    )
