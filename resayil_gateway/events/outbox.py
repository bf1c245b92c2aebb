"""The durable outbox: one row per message (event × recipient), written in the transaction of the change that
caused it and de-duplicated by key, then claimed, sent and marked by the delivery worker.

Statuses: ``pending`` (due at ``next_attempt_at``) → ``sending`` (claimed until ``lease_until``; a row whose
worker died mid-send is claimed again when the lease runs out) → ``sent`` (with the provider's id) or ``failed``
(with the last error), or back to ``pending`` with a later ``next_attempt_at`` after a transient failure.
On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several workers claim side by side, never the same row twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..clock import Clock
from ..store import Store
from ..store.tables import outbox

STATUSES = ("pending", "sending", "sent", "failed")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message in the outbox."""

    id: int
    event: str
    dedupe_key: str
    account_id: int | None
    recipient: str
    payload: Mapping[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    channel: str | None
    provider_id: str | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (for ``resayil notify list --json`` and the admin log)."""
        return {
            "id": self.id,
            "event": self.event,
            "dedupe_key": self.dedupe_key,
            "account_id": self.account_id,
            "recipient": self.recipient,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "channel": self.channel,
            "provider_id": self.provider_id,
            "payload": dict(self.payload),
        }


_COLUMNS = (
    outbox.c.id,
    outbox.c.event,
    outbox.c.dedupe_key,
    outbox.c.account_id,
    outbox.c.recipient,
    outbox.c.payload,
    outbox.c.status,
    outbox.c.attempts,
    outbox.c.next_attempt_at,
    outbox.c.last_error,
    outbox.c.created_at,
    outbox.c.sent_at,
    outbox.c.channel,
    outbox.c.provider_id,
)


class Outbox:
    """Reads and writes of the ``outbox`` table."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    async def add(
        self,
        conn: AsyncConnection,
        event: str,
        key: str,
        account_id: int | None,
        payload: Mapping[str, Any],
        recipients: Sequence[str],
    ) -> int:
        """Write one pending row per recipient in ``conn``'s transaction; a key already present is skipped.
        Returns how many rows are new."""
        now = self.clock.now()
        added = 0
        for recipient in recipients:
            statement = (
                self.store.insert(outbox)
                .values(
                    event=event,
                    dedupe_key=f"{key}>{recipient}"[:200],
                    account_id=account_id,
                    recipient=recipient,
                    payload=dict(payload),
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=[outbox.c.dedupe_key])
                .returning(outbox.c.id)
            )
            if (await conn.execute(statement)).first() is not None:
                added += 1
        return added

    async def claim(self, limit: int, lease: timedelta) -> list[OutboxRow]:
        """Take up to ``limit`` due rows (pending and due, or sending with an expired lease) for this worker:
        each is marked ``sending`` with a lease and one more attempt."""
        now = self.clock.now()
        due = or_(
            and_(outbox.c.status == "pending", outbox.c.next_attempt_at <= now),
            and_(outbox.c.status == "sending", outbox.c.lease_until <= now),
        )
        query = select(outbox.c.id).where(due).order_by(outbox.c.next_attempt_at, outbox.c.id).limit(limit)
        async with self.store.begin() as conn:
            ids = list((await conn.scalars(query.with_for_update(skip_locked=True))).all())
            if not ids:
                return []
            rows = await conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(ids))
                .values(status="sending", lease_until=now + lease, attempts=outbox.c.attempts + 1)
                .returning(*_COLUMNS)
            )
            return sorted((OutboxRow(**row._mapping) for row in rows), key=lambda row: row.id)

    async def _finish(self, row: OutboxRow, **values: Any) -> bool:
        """Record the outcome of ``row``'s attempt, unless another worker has claimed it since (lease lost)."""
        async with self.store.begin() as conn:
            result = await conn.execute(
                update(outbox)
                .where(outbox.c.id == row.id, outbox.c.status == "sending", outbox.c.attempts == row.attempts)
                .values(lease_until=None, **values)
                .returning(outbox.c.id)
            )
            return result.first() is not None

    async def mark_sent(self, row: OutboxRow, channel: str, provider_id: str | None) -> bool:
        """The provider accepted the message."""
        return await self._finish(
            row, status="sent", sent_at=self.clock.now(), channel=channel, provider_id=provider_id, last_error=None
        )

    async def mark_retry(self, row: OutboxRow, channel: str, error: str, at: datetime) -> bool:
        """A transient failure: try again at ``at``."""
        return await self._finish(row, status="pending", next_attempt_at=at, channel=channel, last_error=error)

    async def mark_failed(self, row: OutboxRow, channel: str, error: str) -> bool:
        """Given up: the error is kept for the admins."""
        return await self._finish(row, status="failed", channel=channel, last_error=error)

    async def list(self, status: str | None = None, limit: int = 100) -> list[OutboxRow]:
        """The newest rows first, optionally only those in ``status``."""
        query = select(*_COLUMNS).order_by(outbox.c.id.desc()).limit(limit)
        if status:
            query = query.where(outbox.c.status == status)
        async with self.store.connect() as conn:
            return [OutboxRow(**row._mapping) for row in await conn.execute(query)]

    async def retry_failed(self) -> int:
        """Put every failed row back in line, due now, with its attempts reset; returns how many."""
        async with self.store.begin() as conn:
            result = await conn.execute(
                update(outbox)
                .where(outbox.c.status == "failed")
                .values(status="pending", attempts=0, next_attempt_at=self.clock.now())
                .returning(outbox.c.id)
            )
            return len(result.all())

    async def counts(self) -> dict[str, int]:
        """How many rows are in each status."""
        query = select(outbox.c.status, func.count()).group_by(outbox.c.status)
        async with self.store.connect() as conn:
            found = {status: int(count) for status, count in await conn.execute(query)}
        return {status: found.get(status, 0) for status in STATUSES}
