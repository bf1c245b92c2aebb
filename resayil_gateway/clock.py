"""One injectable clock for the whole gateway, so tests control time instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo


class Clock:
    """Wall-clock time in UTC, and the local calendar day in the configured time zone."""

    def __init__(self, timezone: str = "Asia/Kuwait") -> None:
        self.zone = ZoneInfo(timezone)

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, for measuring durations."""
        return time.monotonic()

    def local_date(self, moment: datetime | None = None) -> datetime:
        """``moment`` (default now) in the configured time zone, for daily budgets and rollups."""
        return (moment or self.now()).astimezone(self.zone)
