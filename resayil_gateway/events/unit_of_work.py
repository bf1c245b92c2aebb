"""A database transaction with the events it raises: the outbox rows commit with the change, and what another
party can observe (``on_event`` hooks, broadcasts to other workers, waking the delivery worker) happens only
after the commit. A rolled-back change leaves no trace and tells no one.

    async with gateway.events.transaction() as tx:
        ...  # change rows through tx.conn
        await tx.record(topup_confirmed(account_id, credits, balance, ref=order_id))
        tx.broadcast("account", str(account_id))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import Emit, Event

if TYPE_CHECKING:
    from ..state import SharedState
    from ..store import Store

log = logging.getLogger("resayil.events")

AfterCommit = Callable[[], Awaitable[Any]]
RecordEvent = Callable[[AsyncConnection, Event], Awaitable[int]]
"""Write an event's outbox rows in the caller's transaction (what a service is given to raise notifications)."""


class EventTransaction:
    """One database transaction with the events it raises; made by :meth:`UnitOfWork.transaction`."""

    def __init__(self, conn: AsyncConnection, record: RecordEvent, state: SharedState) -> None:
        self.conn = conn
        self._record = record
        self._state = state
        self.recorded: list[Event] = []
        self.callbacks: list[AfterCommit] = []

    async def record(self, event: Event) -> int:
        """Raise ``event`` in this transaction (outbox rows for a notification); ``on_event`` hooks see it
        after the commit. Returns the number of new messages."""
        self.recorded.append(event)
        return await self._record(self.conn, event)

    def after_commit(self, callback: AfterCommit) -> None:
        """Run ``callback()`` once the transaction has committed (never if it rolls back)."""
        self.callbacks.append(callback)

    def broadcast(self, topic: str, value: str) -> None:
        """Tell every other worker ``(topic, value)`` after the commit."""
        state = self._state
        self.after_commit(lambda: state.broadcast(topic, value))


class UnitOfWork:
    """Opens event transactions on one store."""

    def __init__(
        self, store: Store, state: SharedState, record: RecordEvent, observe: Emit, queued: asyncio.Event
    ) -> None:
        self._store = store
        self._state = state
        self._record = record
        self._observe = observe
        self._queued = queued

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[EventTransaction]:
        """A transaction whose events are observed, and whose broadcasts are sent, only after it commits."""
        async with self._store.begin() as conn:
            tx = EventTransaction(conn, self._record, self._state)
            yield tx
        if tx.recorded:
            self._queued.set()
        for callback in tx.callbacks:
            try:
                await callback()
            except Exception:
                log.exception("an after-commit action failed")
        for event in tx.recorded:
            await self._observe(event)
