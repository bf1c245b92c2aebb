"""Admission: at most ``max_concurrency`` requests run on a backend at once; the rest wait in the gateway's
own line, higher plan priority first, then first come first served, for at most ``max_queue_wait_s``.

Queue depth (waiting + running) is what failover reads. This implementation counts one process; with
several workers each admits up to its share.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ..errors import NoCapacity


@dataclass
class _Line:
    limit: int
    running: int = 0
    waiting: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return self.running + sum(1 for _, _, future in self.waiting if not future.done())


class Admission:
    """A priority waiting line per backend."""

    def __init__(self) -> None:
        self._lines: dict[str, _Line] = {}
        self._order = itertools.count()

    def configure(self, backend: str, max_concurrency: int) -> None:
        """Set how many requests may run on ``backend`` at once."""
        line = self._lines.setdefault(backend, _Line(max_concurrency))
        line.limit = max(1, max_concurrency)

    def depth(self, backend: str) -> int:
        """Requests waiting for or running on ``backend``."""
        line = self._lines.get(backend)
        return line.depth if line else 0

    def running(self, backend: str) -> int:
        """Requests running on ``backend`` now."""
        line = self._lines.get(backend)
        return line.running if line else 0

    @asynccontextmanager
    async def slot(self, backend: str, priority: int = 0, timeout: float = 30.0) -> AsyncIterator[None]:
        """Hold one of ``backend``'s slots for the body; raises :class:`NoCapacity` (503 with Retry-After)
        after ``timeout`` seconds of waiting. Cancellation while waiting gives the place up cleanly."""
        line = self._lines.setdefault(backend, _Line(1))
        if line.running < line.limit and not line.waiting:
            line.running += 1
        else:
            await self._wait(line, priority, timeout)
        try:
            yield
        finally:
            self._release(line)

    async def _wait(self, line: _Line, priority: int, timeout: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(line.waiting, (-priority, next(self._order), future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if future.done() and not future.cancelled():
                self._release(line)  # the slot arrived as we gave up: pass it on
            else:
                future.cancel()
            if isinstance(exc, TimeoutError):
                raise NoCapacity(
                    "The model server is busy. Please retry shortly.",
                    headers={"Retry-After": str(max(1, int(timeout // 10) or 1))},
                ) from None
            raise

    def _release(self, line: _Line) -> None:
        while line.waiting:
            _, _, future = heapq.heappop(line.waiting)
            if not future.done():
                future.set_result(None)  # the slot passes straight to the next in line
                return
        line.running -= 1
