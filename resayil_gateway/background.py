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

    async def drain(self, timeout: float | None = None) -> int:
        """Wait for every tracked task, including those started while waiting. With ``timeout``, cancel what
        is still running when it runs out (shutdown with the store down) and return how many were cancelled."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._pending:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                left = list(self._pending)
                for task in left:
                    task.cancel()
                await asyncio.gather(*left, return_exceptions=True)
                return len(left)
            await asyncio.wait(list(self._pending), timeout=remaining)
        return 0

    def __len__(self) -> int:
        return len(self._pending)
