"""The events behind the ten notifications, built in one place with the data their templates need, and the
functions other modules call to raise them inside their transaction.

Payments call :func:`record_topup_confirmed` in the fulfilment transaction; activating a plan raises
``plan.activated`` (and ``enterprise.customer``) itself (``billing/plans.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ..config import Settings
from ..domain import Event

if TYPE_CHECKING:
    from ..clock import Clock
    from .unit_of_work import EventTransaction


def top_up_url(settings: Settings) -> str:
    """The absolute top-up page link sent in credit messages."""
    return f"{settings.gateway.public_url}/billing/top-up"


def plan_name(settings: Settings, plan_id: str) -> dict[str, str]:
    """A plan's display name in each language."""
    plan = settings.plan(plan_id)
    return {"ar": plan.name.ar, "en": plan.name.en}


def local_day(clock: Clock, moment: datetime) -> str:
    """``moment`` as a calendar date in the gateway's time zone (``2026-12-31``)."""
    return clock.local_date(moment).date().isoformat()


def welcome(account_id: int, name: str, email: str, role: str, credits: int) -> Event:
    """NOTIF-01: the account was created (once per account), with the credits it starts with."""
    data = {"name": name or email, "email": email, "role": role, "credits": credits}
    return Event("account.created", data, account_id, key=f"account.created:{account_id}")


def subscription_confirmed(
    settings: Settings, clock: Clock, account_id: int, plan_id: str, credits: int, period_end: datetime, ref: str
) -> Event:
    """NOTIF-02: a plan was activated or extended (once per activation reference)."""
    data = {
        "plan": plan_id,
        "plan_name": plan_name(settings, plan_id),
        "credits": credits,
        "expiry_date": local_day(clock, period_end),
        "period_end": period_end.isoformat(),
    }
    return Event("plan.activated", data, account_id, key=f"plan:{ref}")


def enterprise_customer(
    settings: Settings, account_id: int, name: str, email: str, phone: str, plan_id: str, ref: str
) -> Event:
    """NOTIF-10 (admins): an account switched to an Enterprise plan (once per activation reference)."""
    data = {
        "name": name or email,
        "email": email,
        "phone": phone,
        "plan": plan_id,
        "plan_name": plan_name(settings, plan_id),
    }
    return Event("enterprise.customer", data, account_id, key=f"enterprise:{ref}")


def topup_confirmed(account_id: int, credits: int, balance: int, ref: str) -> Event:
    """NOTIF-05: a top-up pack was paid (once per order or reference)."""
    return Event("topup.credited", {"credits": credits, "balance": balance}, account_id, key=f"topup:{ref}")


async def record_topup_confirmed(tx: EventTransaction, account_id: int, credits: int, balance: int, *, ref: str) -> int:
    """Raise NOTIF-05 inside the fulfilment transaction ``tx``; returns the number of new messages."""
    return await tx.record(topup_confirmed(account_id, credits, balance, ref))


def credit_warning(settings: Settings, account_id: int, balance: int, grant_total: int, grant_id: int) -> Event:
    """NOTIF-03: the balance fell below the warning ratio of the amount after the latest grant (once per grant)."""
    percent = (balance * 100) // grant_total if grant_total else 0
    data = {"balance": balance, "percent": percent, "grant_total": grant_total, "top_up_url": top_up_url(settings)}
    return Event("credits.warning", data, account_id, key=f"credit-warning:{account_id}:{grant_id}")


def credits_exhausted(settings: Settings, account_id: int, grant_id: int) -> Event:
    """NOTIF-04: no credits left (once per grant)."""
    data = {"top_up_url": top_up_url(settings)}
    return Event("credits.exhausted", data, account_id, key=f"credits-exhausted:{account_id}:{grant_id}")


def renewal_reminder(
    settings: Settings, clock: Clock, account_id: int, plan_id: str, period_end: datetime, days: int
) -> Event:
    """NOTIF-06: the plan ends in ``days`` days (once per plan period)."""
    data = {
        "plan": plan_id,
        "plan_name": plan_name(settings, plan_id),
        "expiry_date": local_day(clock, period_end),
        "days": days,
    }
    return Event("plan.renewal_reminder", data, account_id, key=f"renewal:{account_id}:{period_end.isoformat()}")


def ip_banned(ban_id: int, ip: str, jail: str, reason: str) -> Event:
    """NOTIF-09 (admins): fail2ban banned an address (once per reported ban)."""
    return Event("ip.banned", {"ip": ip, "jail": jail or "-", "reason": reason or "-"}, key=f"ban:{ban_id}")


def cloud_budget(event: str, used: int, limit: int, day: str) -> Event:
    """NOTIF-07 (``cloud.budget_warning``) or NOTIF-08 (``cloud.budget_exhausted``), once per local day."""
    percent = (used * 100) // limit if limit else 100
    return Event(event, {"used": used, "limit": limit, "percent": percent, "day": day}, key=f"{event}:{day}")
