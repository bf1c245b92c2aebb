"""Reads for the admin dashboard: platform totals, revenue, plans in force, the outbox and bans."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from resayil_gateway.gateway import Gateway
from resayil_gateway.hookcalls import await_me_maybe
from resayil_gateway.store.tables import accounts, bans, ledger, orders, outbox, subscriptions, usage_daily


@dataclass(frozen=True, slots=True)
class Revenue:
    """Paid orders in fils: the total and per item (plan id or pack id)."""

    total: int
    by_item: dict[str, int]


@dataclass(frozen=True, slots=True)
class BudgetGauge:
    """Cloud requests used today against the daily cap, and the colour of the gauge."""

    used: int
    limit: int

    @property
    def ratio(self) -> float:
        """Used share of the cap, 0..1."""
        return min(1.0, self.used / self.limit) if self.limit else 1.0

    @property
    def state(self) -> str:
        """green below 80 %, amber from 80 %, red at the cap."""
        if self.ratio >= 1.0:
            return "red"
        return "amber" if self.ratio >= 0.8 else "green"


@dataclass(frozen=True, slots=True)
class Overview:
    """The admin's first screen."""

    users: int
    plans: dict[str, int]
    revenue_today: Revenue
    revenue_month: Revenue
    revenue_all: Revenue
    calls_today: int
    calls_month: int
    uncollected: int
    budget: BudgetGauge | None


def _day_and_month_start(gateway: Gateway) -> tuple[datetime, datetime]:
    local = gateway.clock.local_date()
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


async def _revenue(gateway: Gateway, since: datetime | None) -> Revenue:
    query = select(orders.c.item, func.sum(orders.c.amount_fils)).where(orders.c.status == "paid")
    if since is not None:
        query = query.where(orders.c.paid_at >= since)
    async with gateway.store.connect() as conn:
        by_item = {str(item): int(total or 0) for item, total in await conn.execute(query.group_by(orders.c.item))}
    return Revenue(sum(by_item.values()), by_item)


async def cloud_budget(gateway: Gateway) -> BudgetGauge | None:
    """Today's cloud budget, when a plugin gave the gateway one (``gateway.cloud_budget``)."""
    budget = getattr(gateway, "cloud_budget", None)
    if budget is None:
        return None
    for name in ("snapshot", "status", "usage"):
        method = getattr(budget, name, None)
        if callable(method):
            value = await await_me_maybe(method())
            used, limit = getattr(value, "used", None), getattr(value, "limit", None)
            if isinstance(value, dict):
                used, limit = value.get("used"), value.get("limit")
            if isinstance(used, int) and isinstance(limit, int):
                return BudgetGauge(used, limit)
    used, limit = getattr(budget, "used", None), getattr(budget, "limit", None)
    return BudgetGauge(used, limit) if isinstance(used, int) and isinstance(limit, int) else None


async def overview(gateway: Gateway) -> Overview:
    """Users, plans in force by tier, revenue (today, this month, ever), API calls and the cloud budget."""
    day, month = _day_and_month_start(gateway)
    now = gateway.clock.now()
    async with gateway.store.connect() as conn:
        users = int(await conn.scalar(select(func.count()).select_from(accounts)) or 0)
        plan_rows = await conn.execute(
            select(subscriptions.c.plan, func.count())
            .where(subscriptions.c.period_end > now)
            .group_by(subscriptions.c.plan)
        )
        plans = {str(plan): int(count) for plan, count in plan_rows}
        calls_today = await conn.scalar(select(func.sum(usage_daily.c.requests)).where(usage_daily.c.day == day.date()))
        uncollected = await conn.scalar(select(func.sum(ledger.c.uncollected)))
        calls_month = await conn.scalar(
            select(func.sum(usage_daily.c.requests)).where(usage_daily.c.day >= month.date())
        )
    return Overview(
        users=users,
        plans=plans,
        revenue_today=await _revenue(gateway, day),
        revenue_month=await _revenue(gateway, month),
        revenue_all=await _revenue(gateway, None),
        calls_today=int(calls_today or 0),
        calls_month=int(calls_month or 0),
        uncollected=int(uncollected or 0),
        budget=await cloud_budget(gateway),
    )


async def notification_log(gateway: Gateway, limit: int = 100) -> Sequence[Any]:
    """The latest outbox rows with their delivery status."""
    query = select(outbox).order_by(outbox.c.id.desc()).limit(limit)
    async with gateway.store.connect() as conn:
        return list(await conn.execute(query))


async def ban_list(gateway: Gateway, limit: int = 100) -> Sequence[Any]:
    """The latest bans (fail2ban reports and the gateway's own)."""
    query = select(bans).order_by(bans.c.id.desc()).limit(limit)
    async with gateway.store.connect() as conn:
        return list(await conn.execute(query))


def recent_cutoff(gateway: Gateway, days: int) -> datetime:
    """``days`` ago on the gateway's clock."""
    return gateway.clock.now() - timedelta(days=days)
