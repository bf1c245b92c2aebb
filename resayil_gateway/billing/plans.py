"""Plans: activating one sets the tier and period and grants its credits, in one transaction, with its audit
row and its notifications (subscription confirmed; new Enterprise customer); caches are invalidated after it
commits.

Paying again for the same plan before it ends extends the period from the current end; a different plan
switches at once and its period starts now. Plan credits expire at the period's end (a ledger row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from ..events.notifications import enterprise_customer, subscription_confirmed
from ..store.tables import accounts, balances, subscriptions
from .ledger import Entry, LedgerError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from ..events.bus import EventTransaction
    from ..gateway import Gateway


@dataclass(frozen=True, slots=True)
class PlanActivation:
    """What activating a plan did."""

    account_id: int
    plan: str
    period_start: datetime
    period_end: datetime
    credits: int
    entry: Entry

    @property
    def replayed(self) -> bool:
        """True when this reference had already activated the plan (nothing changed now)."""
        return self.entry.replayed


async def activate_plan(
    gateway: Gateway,
    account_id: int,
    plan_id: str,
    *,
    ref: str,
    actor: str,
    period: timedelta | None = None,
    conn: AsyncConnection | None = None,
) -> PlanActivation:
    """Activate (or extend) ``plan_id`` for the account and grant its credits; idempotent on ``ref``.

    Pass ``conn`` to make it part of a larger transaction (an order's fulfilment); it must come from
    ``gateway.events.transaction()``, whose commit releases the notifications and the cache invalidation.
    """
    if conn is None:
        async with gateway.events.transaction() as tx:
            return await _activate(gateway, tx, account_id, plan_id, ref, actor, period)
    return await _activate(gateway, gateway.events.joined(conn), account_id, plan_id, ref, actor, period)


async def _activate(
    gateway: Gateway,
    tx: EventTransaction,
    account_id: int,
    plan_id: str,
    ref: str,
    actor: str,
    period: timedelta | None,
) -> PlanActivation:
    conn = tx.conn
    plan = gateway.settings.plans.get(plan_id)
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
    existing = await gateway.ledger.by_ref(ref, conn)
    if existing is not None and current is not None:
        return PlanActivation(
            account_id, current.plan, current.period_start, current.period_end, existing.delta, existing
        )
    now = gateway.clock.now()
    length = period or timedelta(days=plan.period_days)
    if current is not None and current.plan == plan_id and current.period_end > now:
        start, end = current.period_start, current.period_end + length
    else:
        start, end = now, now + length
    entry = await gateway.ledger.grant(
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
    dialect = sqlite if gateway.store.is_sqlite else postgresql
    values = {
        "account_id": account_id,
        "plan": plan_id,
        "period_start": start,
        "period_end": end,
        "updated_at": now,
    }
    upsert = dialect.insert(subscriptions).values(**values)
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
    await gateway.audit(
        conn,
        actor,
        "plan.activated",
        f"account:{account_id}",
        {"plan": plan_id, "period_end": end.isoformat(), "ref": ref},
    )
    settings = gateway.settings
    await tx.record(subscription_confirmed(settings, gateway.clock, account_id, plan_id, plan.credits, end, ref))
    was_enterprise = current is not None and current.plan == plan_id and current.period_end > now
    if plan_id in settings.notifications.enterprise_plans and not was_enterprise:
        who = (
            await conn.execute(
                select(accounts.c.name, accounts.c.email, accounts.c.phone).where(accounts.c.id == account_id)
            )
        ).one()
        await tx.record(enterprise_customer(settings, account_id, who.name, who.email, who.phone, plan_id, ref))
    tx.after_commit(lambda: gateway.keys.invalidate_account(account_id))
    return PlanActivation(account_id, plan_id, start, end, plan.credits, entry)
