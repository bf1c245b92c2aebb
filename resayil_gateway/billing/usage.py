"""Usage rows, one per API request, written in batches off the request path, with daily rollups per account
and model (day in the configured time zone) so dashboards never scan raw rows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert

from ..store.tables import usage, usage_daily

if TYPE_CHECKING:
    from ..clock import Clock
    from ..store import Store

log = logging.getLogger("resayil.usage")


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one API request did."""

    request_id: str
    account_id: int
    key_id: int | None
    model: str
    backend: str
    endpoint: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    credits: int
    status: int
    error_code: str | None
    latency_ms: float
    created_at: datetime


class UsageRecorder:
    """Collects usage records in memory and writes them every ``interval`` seconds or ``batch`` records."""

    def __init__(self, store: Store, clock: Clock, interval: float = 0.5, batch: int = 500) -> None:
        self._store = store
        self._clock = clock
        self.interval = interval
        self.batch = batch
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def record(self, item: UsageRecord) -> None:
        """Queue a record; never blocks and never does I/O."""
        self._pending.append(item)
        if len(self._pending) >= self.batch:
            self._wake.set()

    async def flush(self) -> int:
        """Write everything queued; returns how many rows were written."""
        async with self._lock:
            if not self._pending:
                return 0
            rows, self._pending = self._pending, []
            try:
                await self._write(rows)
            except Exception:
                log.exception("could not write %d usage rows; keeping them for the next attempt", len(rows))
                self._pending[:0] = rows
                return 0
            return len(rows)

    async def _write(self, rows: list[UsageRecord]) -> None:
        zone = self._clock.zone
        daily: dict[tuple[int, date, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for row in rows:
            totals = daily[(row.account_id, row.created_at.astimezone(zone).date(), row.model)]
            totals[0] += 1
            totals[1] += 1 if row.status >= 400 else 0
            totals[2] += row.prompt_tokens
            totals[3] += row.completion_tokens
            totals[4] += row.credits
        upsert: Any = self._store.insert(usage_daily)
        upsert = upsert.on_conflict_do_update(
            index_elements=[usage_daily.c.account_id, usage_daily.c.day, usage_daily.c.model],
            set_={
                "requests": usage_daily.c.requests + upsert.excluded.requests,
                "errors": usage_daily.c.errors + upsert.excluded.errors,
                "prompt_tokens": usage_daily.c.prompt_tokens + upsert.excluded.prompt_tokens,
                "completion_tokens": usage_daily.c.completion_tokens + upsert.excluded.completion_tokens,
                "credits": usage_daily.c.credits + upsert.excluded.credits,
            },
        )
        async with self._store.begin_fast() as conn:
            await conn.execute(insert(usage), [_as_dict(row) for row in rows])
            for (account_id, day, model), (requests, errors, prompt, completion, credits) in sorted(daily.items()):
                await conn.execute(
                    upsert,
                    {
                        "account_id": account_id,
                        "day": day,
                        "model": model,
                        "requests": requests,
                        "errors": errors,
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "credits": credits,
                    },
                )

    async def run(self) -> None:
        """Flush every ``interval`` seconds (sooner when a batch fills) until cancelled, then flush once more."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                self._wake.clear()
                await self.flush()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flush())


def _as_dict(row: UsageRecord) -> dict[str, Any]:
    return {name: getattr(row, name) for name in UsageRecord.__slots__}
