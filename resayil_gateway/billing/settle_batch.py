"""Settling in batches (PostgreSQL): settles are off the response path, so the ones that arrive within a few
milliseconds travel together — one round trip and one transaction for many requests, and far less work for
the database under load. Each settle still applies the single-hold rules; a batch is ordered by account so two
batches never lock balances in opposite orders (no deadlock between workers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SettleItem:
    """One hold to settle, and where its result goes."""

    account_id: int
    hold_id: str
    cost: int
    memo: str
    result: asyncio.Future[Any] = field(repr=False)


Send = Callable[[Sequence[SettleItem]], Awaitable[dict[str, Any]]]


class SettleBatcher:
    """Gathers settles for up to ``window`` seconds (or ``limit`` of them) and sends them in one call."""

    def __init__(self, send: Send, window: float, limit: int = 256) -> None:
        self._send = send
        self.window = window
        self.limit = limit
        self._queue: list[SettleItem] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def settle(self, account_id: int, hold_id: str, cost: int, memo: str) -> Any:
        """The settle's result row (None when the hold was already gone), once its batch has committed."""
        loop = asyncio.get_running_loop()
        item = SettleItem(account_id, hold_id, cost, memo, loop.create_future())
        self._queue.append(item)
        if len(self._queue) >= self.limit:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window, self._flush)
        return await asyncio.shield(item.result)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.ensure_future(self._deliver(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _deliver(self, batch: list[SettleItem]) -> None:
        batch.sort(key=lambda item: (item.account_id, item.hold_id))
        try:
            rows = await self._send(batch)
        except BaseException as exc:
            for item in batch:
                if not item.result.done():
                    item.result.set_exception(exc if isinstance(exc, Exception) else RuntimeError("settle cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for item in batch:
            row = rows.pop(item.hold_id, None)  # a hold named twice was settled once: the repeat gets None
            if not item.result.done():
                item.result.set_result(row)

    async def close(self) -> None:
        """Send what is queued and wait for every batch in flight."""
        self._flush()
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)
