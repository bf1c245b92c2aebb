"""Work that outlives the request that started it (a settle after the answer was sent), kept until done."""

from __future__ import annotations

import asyncio
from typing import Any


class BackgroundTasks:
    """A set of running tasks that can be drained before shutdown (and before a test reads balances)."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[Any]] = set()

    def track(self, task: asyncio.Future[Any]) -> None:
        """Keep ``task`` until it finishes."""
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for every tracked task, including those started while waiting."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def __len__(self) -> int:
        return len(self._pending)
