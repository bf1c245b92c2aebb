"""The ten notifications of SPEC §6: which domain event raises each, who receives it and the placeholders its
templates may use. One place for these facts; templates, recording and tests all read them from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Audience = Literal["user", "admin"]


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification: the event name that raises it, its audience and the placeholders its data provides."""

    event: str
    audience: Audience
    placeholders: frozenset[str]
    requirement: str


def _notification(event: str, audience: Audience, requirement: str, *placeholders: str) -> Notification:
    return Notification(event, audience, frozenset(placeholders), requirement)


NOTIFICATIONS: dict[str, Notification] = {
    n.event: n
    for n in (
        _notification("account.created", "user", "NOTIF-01", "name", "email", "credits"),
        _notification("plan.activated", "user", "NOTIF-02", "plan", "plan_name", "credits", "expiry_date"),
        _notification("credits.warning", "user", "NOTIF-03", "balance", "percent", "grant_total", "top_up_url"),
        _notification("credits.exhausted", "user", "NOTIF-04", "top_up_url"),
        _notification("topup.credited", "user", "NOTIF-05", "credits", "balance"),
        _notification("plan.renewal_reminder", "user", "NOTIF-06", "plan", "plan_name", "expiry_date", "days"),
        _notification("cloud.budget_warning", "admin", "NOTIF-07", "used", "limit", "percent", "day"),
        _notification("cloud.budget_exhausted", "admin", "NOTIF-08", "used", "limit", "day"),
        _notification("ip.banned", "admin", "NOTIF-09", "ip", "jail", "reason"),
        _notification("enterprise.customer", "admin", "NOTIF-10", "name", "email", "phone", "plan", "plan_name"),
    )
}

LANGUAGES: tuple[str, ...] = ("ar", "en")
