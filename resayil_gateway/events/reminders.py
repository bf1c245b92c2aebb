"""Renewal reminders (NOTIF-06): once per plan period, ``notifications.renewal_reminder_days`` before it ends.

``subscriptions.reminded_for`` holds the period end already reminded of; extending or switching the plan
moves the end (and clears it), so the next period gets its own reminder.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select, update

from ..store.tables import subscriptions
from .notifications import renewal_reminder

if TYPE_CHECKING:
    from ..config import Settings
    from .bus import Events


async def send_renewal_reminders(events: Events, settings: Settings, limit: int = 500) -> int:
    """Queue a reminder for every plan ending within the reminder window and not yet reminded; returns how many."""
    now = events.clock.now()
    days = settings.notifications.renewal_reminder_days
    reminded_for = subscriptions.c.reminded_for
    not_reminded = or_(reminded_for.is_(None), reminded_for != subscriptions.c.period_end)
    query = (
        select(subscriptions.c.account_id, subscriptions.c.plan, subscriptions.c.period_end)
        .where(subscriptions.c.period_end > now, subscriptions.c.period_end <= now + timedelta(days=days), not_reminded)
        .limit(limit)
    )
    async with events.store.connect() as conn:
        due = (await conn.execute(query)).all()
    sent = 0
    for account_id, plan_id, period_end in due:
        async with events.transaction() as tx:
            claimed = await tx.conn.execute(
                update(subscriptions)
                .where(
                    subscriptions.c.account_id == account_id,
                    subscriptions.c.period_end == period_end,
                    not_reminded,
                )
                .values(reminded_for=period_end)
                .returning(subscriptions.c.account_id)
            )
            if claimed.first() is None:
                continue  # another worker reminded it, or the plan changed meanwhile
            left = max(1, math.ceil((period_end - now) / timedelta(days=1)))
            event = renewal_reminder(settings, events.clock, account_id, plan_id, period_end, left)
            await tx.record(event)
            sent += 1
    return sent
