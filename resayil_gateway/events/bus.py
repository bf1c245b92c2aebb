"""The unit of work for domain events: changes, their outbox rows and their audit rows commit together, and
everything another party can observe (``on_event`` hooks, broadcasts to other workers, waking the delivery
worker) happens only after the commit. A rolled-back change leaves no trace and tells no one.

    async with gateway.events.transaction() as tx:
        ...  # change rows through tx.conn
        await tx.record(Event("topup.confirmed", {...}, account_id, key=f"topup:{order_id}"))
        tx.broadcast("account", str(account_id))
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import Event
from ..plugins import await_me_maybe
from .bans import BanList
from .catalog import NOTIFICATIONS
from .credit_alerts import CreditAlerts
from .outbox import Outbox
from .recipients import recipients_for
from .templates import Templates

if TYPE_CHECKING:
    from ..gateway import Gateway

log = logging.getLogger("resayil.events")

AfterCommit = Callable[[], Awaitable[Any]]


class EventTransaction:
    """One database transaction with the events it raises; made by :meth:`Events.transaction`."""

    def __init__(self, events: Events, conn: AsyncConnection) -> None:
        self.conn = conn
        self._events = events
        self._observed: list[Event] = []
        self._callbacks: list[AfterCommit] = []
        self.new_messages = 0

    async def record(self, event: Event) -> int:
        """Raise ``event`` in this transaction. A notification (see ``catalog.NOTIFICATIONS``) is written to the
        outbox, one row per recipient, de-duplicated by ``event.key``; ``on_event`` hooks see the event after
        the commit, unless every one of its messages was a duplicate. Returns the number of new messages."""
        notification = NOTIFICATIONS.get(event.name)
        if notification is None:
            self._observed.append(event)
            return 0
        recipients = await recipients_for(self.conn, notification.audience, event.account_id, self._events.channels)
        if not recipients:
            log.warning("no recipient for %s (account %s): nothing queued", event.name, event.account_id)
        key = event.key or f"{event.name}:{uuid.uuid4().hex}"
        added = await self._events.outbox.add(self.conn, event.name, key, event.account_id, event.data, recipients)
        if added or not recipients:
            self._observed.append(event)
        self.new_messages += added
        return added

    def after_commit(self, callback: AfterCommit) -> None:
        """Run ``callback()`` once the transaction has committed (never if it rolls back)."""
        self._callbacks.append(callback)

    def broadcast(self, topic: str, value: str) -> None:
        """Tell every other worker ``(topic, value)`` after the commit."""
        state = self._events.gateway.state
        self.after_commit(lambda: state.broadcast(topic, value))


class Events:
    """Domain events of one gateway: transactions that raise them, the outbox, the templates."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.outbox = Outbox(gateway.store, gateway.clock)
        self.templates = Templates(gateway.settings.notifications.templates_dir)
        self.queued = asyncio.Event()
        self.credit_alerts = CreditAlerts(gateway)
        self.bans = BanList(gateway)
        self._open: weakref.WeakKeyDictionary[AsyncConnection, EventTransaction] = weakref.WeakKeyDictionary()

    @property
    def channels(self) -> dict[str, Any]:
        """The registered notification channels."""
        return self.gateway.channels

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[EventTransaction]:
        """A transaction whose events are observed, and whose broadcasts are sent, only after it commits."""
        async with self.gateway.store.begin() as conn:
            tx = EventTransaction(self, conn)
            self._open[conn] = tx
            try:
                yield tx
            finally:
                self._open.pop(conn, None)
        await self._committed(tx)

    def joined(self, conn: AsyncConnection) -> EventTransaction:
        """The event transaction ``conn`` belongs to (for code that takes a connection from its caller)."""
        tx = self._open.get(conn)
        if tx is None:
            raise RuntimeError(
                "open this transaction with gateway.events.transaction() so its events wait for the commit"
            )
        return tx

    async def _committed(self, tx: EventTransaction) -> None:
        if tx.new_messages:
            self.queued.set()
        for callback in tx._callbacks:
            try:
                await callback()
            except Exception:
                log.exception("an after-commit action failed")
        for event in tx._observed:
            await self.observe(event)

    async def emit(self, event: Event) -> None:
        """Raise an event that no transaction caused (a cloud-budget crossing read from Redis): a notification is
        written to the outbox in its own transaction; any event reaches ``on_event`` hooks."""
        if event.name in NOTIFICATIONS:
            if event.key is None:
                # Crossings outside a transaction (the cloud budget's) are told once per local day.
                day = event.data.get("day") or self.gateway.clock.local_date().date().isoformat()
                event = replace(event, key=f"{event.name}:{day}")
            async with self.transaction() as tx:
                await tx.record(event)
        else:
            await self.observe(event)

    async def observe(self, event: Event) -> None:
        """Tell every ``on_event`` implementation; their failures are logged, never raised."""
        for result in self.gateway.pm.hook.on_event(event=event, gateway=self.gateway):
            try:
                await await_me_maybe(result)
            except Exception:
                log.exception("an on_event hook failed for %s", event.name)
