"""Reads for the user dashboard: usage per day and per request, and payments."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select

from resayil_gateway.gateway import Gateway
from resayil_gateway.store.tables import orders, usage, usage_daily

from .chart import DayUsage

CHART_DAYS = 30


def _today(gateway: Gateway) -> date:
    return gateway.clock.local_date().date()


async def daily_usage(gateway: Gateway, account_id: int, days: int = CHART_DAYS) -> list[DayUsage]:
    """Requests and credits per day for the last ``days`` days (in the gateway's time zone), oldest first,
    with empty days filled in."""
    await gateway.usage.flush()
    today = _today(gateway)
    first = today - timedelta(days=days - 1)
    query = (
        select(usage_daily.c.day, func.sum(usage_daily.c.requests), func.sum(usage_daily.c.credits))
        .where(usage_daily.c.account_id == account_id, usage_daily.c.day >= first)
        .group_by(usage_daily.c.day)
    )
    async with gateway.store.connect() as conn:
        found = {row[0]: (int(row[1] or 0), int(row[2] or 0)) for row in await conn.execute(query)}
    series = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        requests, credits = found.get(day, (0, 0))
        series.append(DayUsage(day, requests, credits))
    return series


async def usage_page(gateway: Gateway, account_id: int, page: int, size: int) -> tuple[Sequence[Any], bool]:
    """One page of the account's requests, newest first, and whether an older page exists."""
    query = (
        select(
            usage.c.created_at,
            usage.c.model,
            usage.c.prompt_tokens,
            usage.c.completion_tokens,
            usage.c.credits,
            usage.c.status,
            usage.c.latency_ms,
        )
        .where(usage.c.account_id == account_id)
        .order_by(usage.c.id.desc())
        .limit(size + 1)
        .offset((page - 1) * size)
    )
    async with gateway.store.connect() as conn:
        rows = list(await conn.execute(query))
    return rows[:size], len(rows) > size


async def payments(gateway: Gateway, account_id: int, limit: int = 20) -> Sequence[Any]:
    """The account's latest orders (pending, paid, failed), newest first."""
    query = (
        select(
            orders.c.id,
            orders.c.kind,
            orders.c.item,
            orders.c.amount_fils,
            orders.c.credits,
            orders.c.status,
            orders.c.created_at,
            orders.c.paid_at,
        )
        .where(orders.c.account_id == account_id)
        .order_by(orders.c.created_at.desc())
        .limit(limit)
    )
    async with gateway.store.connect() as conn:
        return list(await conn.execute(query))
