"""Credit warning (NOTIF-03) and credits exhausted (NOTIF-04), checked after a charge settles, off the
request path: the ``request.charged`` event already carries the balance after the charge, and each process
remembers every account's latest grant (the total after it, ``balances.last_grant_total``, and its ledger id)
for a minute, so the store is read only when a threshold may have been crossed (or credits were added since
the last charge seen here). Each alert is sent once per grant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..store.tables import balances, ledger
from .notifications import credit_warning, credits_exhausted

if TYPE_CHECKING:
    from ..clock import Clock
    from ..config import Settings
    from ..domain import Emit, Event
    from ..store import Store

log = logging.getLogger("resayil.notifications")

GRANT_CACHE_S = 60.0
NOT_GRANTS = ("request", "adjustment", "expiry")


class CreditAlerts:
    """Raises the credit alerts of one gateway."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        emit: Emit,
        track: Callable[[asyncio.Future[Any]], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._emit = emit
        self._track = track
        self._grants: dict[int, tuple[int, int, float]] = {}
        self._told: set[str] = set()
        self._last_balance: dict[int, int] = {}
        self._checking: set[int] = set()
        self._recheck: dict[int, int] = {}

    def after_charge(self, charged: Event) -> None:
        """Look at a ``request.charged`` event; start a check in the background when an alert may be due."""
        account_id, data = charged.account_id, charged.data
        if account_id is None or (not data.get("credits") and not data.get("uncollected")):
            return
        balance = int(data.get("balance", 0))
        last = self._last_balance.get(account_id)
        self._last_balance[account_id] = balance
        if last is not None and balance + int(data.get("credits", 0)) > last:
            self._grants.pop(account_id, None)  # credits were added since the last charge seen here
        cached = self._grants.get(account_id)
        if cached is not None and self._clock.monotonic() - cached[2] < GRANT_CACHE_S:
            event = self._alert(account_id, balance, cached[0], cached[1])
            if event is None or event.key in self._told:
                return
        if account_id in self._checking:
            self._recheck[account_id] = balance
            return
        self._checking.add(account_id)
        self._track(asyncio.ensure_future(self._check_until_settled(account_id, balance)))

    async def _check_until_settled(self, account_id: int, balance: int) -> None:
        """One check at a time per account; charges that arrive meanwhile are checked next, by their latest
        balance (a burst of requests costs one read, not one per request)."""
        try:
            await self.check(account_id, balance)
            while (latest := self._recheck.pop(account_id, None)) is not None:
                await self.check(account_id, latest)
        finally:
            self._checking.discard(account_id)

    def _alert(self, account_id: int, balance: int, grant_total: int, grant_id: int) -> Event | None:
        if balance <= 0:
            return credits_exhausted(self._settings, account_id, grant_id)
        if grant_total and balance < grant_total * self._settings.billing.credit_warning_ratio:
            return credit_warning(self._settings, account_id, balance, grant_total, grant_id)
        return None

    async def latest_grant(self, account_id: int) -> tuple[int, int]:
        """The account's total after its latest grant and that grant's ledger id (0 when never granted)."""
        latest = (
            select(func.max(ledger.c.id))
            .where(
                ledger.c.account_id == account_id,
                ledger.c.reason.notin_(NOT_GRANTS),
                ledger.c.plan_delta + ledger.c.topup_delta > 0,
            )
            .scalar_subquery()
        )
        query = select(balances.c.last_grant_total, latest).where(balances.c.account_id == account_id)
        async with self._store.connect() as conn:
            row = (await conn.execute(query)).first()
        grant_total, grant_id = (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)
        self._grants[account_id] = (grant_total, grant_id, self._clock.monotonic())
        return grant_total, grant_id

    async def check(self, account_id: int, balance: int) -> Event | None:
        """Raise the alert ``balance`` calls for, if any and not raised before; returns it."""
        try:
            grant_total, grant_id = await self.latest_grant(account_id)
            event = self._alert(account_id, balance, grant_total, grant_id)
            if event is None or event.key in self._told:
                return None
            await self._emit(event)
            self._told.add(event.key or "")
            return event
        except Exception:
            log.exception("credit alert check failed for account %d", account_id)
            return None
