"""Domain events and the outbox: a notification is written in the transaction of the change that caused it,
and everything another party can observe (``on_event`` hooks, broadcasts, waking the delivery worker)
happens after the commit.

Two ways in:

* a service that owns its transaction writes ``await events.record(conn, event)`` inside it and hands the
  same event to ``emit`` once it has committed (the second write finds the rows by their key and adds
  nothing);
* code that needs a transaction opens one with events attached: ``async with events.transaction() as tx``
  (see :mod:`.unit_of_work`).

An event no transaction caused (a cloud-budget crossing) goes to :meth:`Events.emit`, which writes it in its
own transaction (``gateway.emit`` does exactly that).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import Emit, Event
from .bans import BanList
from .catalog import NOTIFICATIONS
from .credit_alerts import CreditAlerts
from .outbox import Outbox
from .recipients import recipients_for
from .templates import Templates
from .unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from ..clock import Clock
    from ..config import Settings
    from ..state import SharedState
    from ..store import Store

log = logging.getLogger("resayil.events")


class Events:
    """Domain events of one gateway: the outbox, its templates, and the alerts and bans that feed it."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        state: SharedState,
        channels: Mapping[str, Any],
        observe: Emit,
        track: Callable[[asyncio.Future[Any]], None],
    ) -> None:
        self.store = store
        self.clock = clock
        self.state = state
        self.channels = channels
        self._observe = observe
        self.outbox = Outbox(store, clock)
        self.templates = Templates(settings.notifications.templates_dir)
        self.queued = asyncio.Event()
        self.unit_of_work = UnitOfWork(store, state, self.record, observe, self.queued)
        self.transaction = self.unit_of_work.transaction
        self.credit_alerts = CreditAlerts(store, clock, settings, self.emit, track)
        self.bans = BanList(self.unit_of_work, store, clock, state)

    async def record(self, conn: AsyncConnection, event: Event) -> int:
        """Write ``event``'s outbox rows (one per recipient) in ``conn``'s transaction when it is a notification
        (see ``catalog.NOTIFICATIONS``); a key already present adds nothing. Returns the number of new rows."""
        notification = NOTIFICATIONS.get(event.name)
        if notification is None:
            return 0
        recipients = await recipients_for(conn, notification.audience, event.account_id, self.channels)
        if not recipients:
            log.warning("no recipient for %s (account %s): nothing queued", event.name, event.account_id)
            return 0
        key = event.key or f"{event.name}:{uuid.uuid4().hex}"
        return await self.outbox.add(conn, event.name, key, event.account_id, event.data, recipients)

    def _completed(self, event: Event) -> Event:
        """A crossing outside a transaction (the cloud budget's) gets the percentage its template needs when the
        emitter left it out; one without a key is told once per local day (the day filled in when missing)."""
        data = dict(event.data)
        if "used" in data and "limit" in data and "percent" not in data:
            data["percent"] = (int(data["used"]) * 100) // max(1, int(data["limit"]))
        if event.key is not None:
            return replace(event, data=data)
        data.setdefault("day", self.clock.local_date().date().isoformat())
        return replace(event, data=data, key=f"{event.name}:{data['day']}")

    async def emit(self, event: Event) -> None:
        """Raise an event after its change committed, or one no transaction caused: a notification is written to
        the outbox in its own transaction (once per key), then ``on_event`` hooks see the event."""
        if event.name == "request.charged":
            self.credit_alerts.after_charge(event)
        elif event.name in NOTIFICATIONS:
            event = self._completed(event)
            try:
                async with self.store.begin() as conn:
                    await self.record(conn, event)
            except Exception:
                # the change that raised it has happened; its caller (a request) must not fail for its message
                log.exception("could not queue the notification for %s", event.name)
            else:
                self.queued.set()
        await self._observe(event)
