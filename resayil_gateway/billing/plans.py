"""Plans: activating one sets the tier and period and grants its credits, in one transaction with its audit
row and its notifications (subscription confirmed; a new Enterprise customer to the admins).

Paying again for the same plan before it ends extends the period from the current end; a different plan
switches at once and its period starts now. Plan credits expire at the period's end (a ledger row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..domain import Event
from ..events.notifications import enterprise_customer, subscription_confirmed
from ..store.audit import record_audit
from ..store.tables import accounts, balances, subscriptions
from .ledger import Entry, LedgerError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from ..auth.account_changes import AccountChanges
    from ..clock import Clock
    from ..config import Settings
    from ..domain import Emit
    from ..events.unit_of_work import RecordEvent
    from ..store import Store
    from .ledger import Ledger


@dataclass(frozen=True, slots=True)
class PlanActivation:
    """What activating a plan did."""

    account_id: int
    plan: str
    period_start: datetime
    period_end: datetime
    credits: int
    entry: Entry
    events: tuple[Event, ...] = ()

    @property
    def replayed(self) -> bool:
        """True when this reference had already activated the plan (nothing changed now)."""
        return self.entry.replayed


class PlanService:
    """Activates, extends and switches plans; what other processes see happens after the commit."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: Settings,
        ledger: Ledger,
        changes: AccountChanges,
        emit: Emit,
        *,
        record: RecordEvent | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._ledger = ledger
        self._changes = changes
        self._emit = emit
        self._record = record

    async def activate(
        self,
        account_id: int,
        plan_id: str,
        *,
        ref: str,
        actor: str,
        period: timedelta | None = None,
        conn: AsyncConnection | None = None,
    ) -> PlanActivation:
        """Activate (or extend) ``plan_id`` for the account and grant its credits; idempotent on ``ref``.

        Pass ``conn`` to make it part of a larger transaction (an order's fulfilment); then call
        :meth:`announce` with the result once that transaction has committed.
        """
        if conn is not None:
            return await self._activate(conn, account_id, plan_id, ref, actor, period)
        async with self._store.begin() as own:
            activation = await self._activate(own, account_id, plan_id, ref, actor, period)
        await self.announce(activation)
        return activation

    async def announce(self, activation: PlanActivation) -> None:
        """After the commit: every worker drops its cached callers of the account; ``plan.activated`` (and, for
        a new Enterprise customer, ``enterprise.customer``) is emitted (nothing for a replayed reference)."""
        if activation.replayed:
            return
        await self._changes.announce(activation.account_id)
        for event in activation.events:
            await self._emit(event)

    async def _activate(
        self,
        conn: AsyncConnection,
        account_id: int,
        plan_id: str,
        ref: str,
        actor: str,
        period: timedelta | None,
    ) -> PlanActivation:
        plan = self._settings.plans.get(plan_id)
        if plan is None:
            raise LedgerError(f"unknown plan {plan_id!r}")
        locked = await conn.execute(
            select(balances.c.account_id).where(balances.c.account_id == account_id).with_for_update()
        )
        if locked.first() is None:
            raise LedgerError(f"no account with id {account_id}")
        current = (
            await conn.execute(
                select(subscriptions.c.plan, subscriptions.c.period_start, subscriptions.c.period_end).where(
                    subscriptions.c.account_id == account_id
                )
            )
        ).first()
        existing = await self._ledger.by_ref(ref, conn)
        if existing is not None and current is not None:
            return PlanActivation(
                account_id, current.plan, current.period_start, current.period_end, existing.delta, existing
            )
        now = self._clock.now()
        length = period or timedelta(days=plan.period_days)
        if current is not None and current.plan == plan_id and current.period_end > now:
            start, end = current.period_start, current.period_end + length
        else:
            start, end = now, now + length
        entry = await self._ledger.grant(
            account_id,
            plan.credits,
            bucket="plan",
            ref=ref,
            reason="plan_grant",
            actor=actor,
            expires_at=end,
            memo=f"{plan_id} until {end.date().isoformat()}",
            conn=conn,
        )
        values = {
            "account_id": account_id,
            "plan": plan_id,
            "period_start": start,
            "period_end": end,
            "updated_at": now,
        }
        upsert = self._store.insert(subscriptions).values(**values)
        await conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[subscriptions.c.account_id],
                set_={
                    "plan": plan_id,
                    "period_start": start,
                    "period_end": end,
                    "updated_at": now,
                    "reminded_for": None,
                },
            )
        )
        await record_audit(
            conn,
            now,
            actor,
            "plan.activated",
            f"account:{account_id}",
            {"plan": plan_id, "period_end": end.isoformat(), "ref": ref},
        )
        events = [subscription_confirmed(self._settings, self._clock, account_id, plan_id, plan.credits, end, ref)]
        was_same_plan = current is not None and current.plan == plan_id and current.period_end > now
        if plan_id in self._settings.notifications.enterprise_plans and not was_same_plan:
            who = (
                await conn.execute(
                    select(accounts.c.name, accounts.c.email, accounts.c.phone).where(accounts.c.id == account_id)
                )
            ).one()
            events.append(enterprise_customer(self._settings, account_id, who.name, who.email, who.phone, plan_id, ref))
        if self._record is not None:
            for event in events:
                await self._record(conn, event)  # the messages commit with the plan
        return PlanActivation(account_id, plan_id, start, end, plan.credits, entry, tuple(events))
