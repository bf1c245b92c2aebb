"""Admission: at most ``max_concurrency`` requests run on a backend at once; the rest wait in the gateway's
own line, higher plan priority first, then first come first served, for at most ``max_queue_wait_s``.

Queue depth (waiting + running) is what failover reads. Two implementations of one interface:
:class:`LocalAdmission` for one process, :class:`RedisAdmission` for many workers sharing one line per backend
(``admission_redis.py``). ``admission_setup.make_admission`` picks the one that matches the shared state.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import NoCapacity, ServiceUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class QueueWaitExceeded(NoCapacity):
    """503: the request waited ``max_queue_wait_s`` for a slot; ``Retry-After`` says when to try again."""


def queue_wait_exceeded(timeout: float) -> QueueWaitExceeded:
    """The error for a request that waited ``timeout`` seconds without getting a slot."""
    return QueueWaitExceeded(
        "The model server is busy. Please retry shortly.",
        headers={"Retry-After": str(max(1, int(timeout // 10)))},
    )


def state_unavailable() -> ServiceUnavailable:
    """The error for a request the shared state (Redis) could not admit or count."""
    return ServiceUnavailable("The service is temporarily unavailable. Please retry.", headers={"Retry-After": "2"})


class Admission(ABC):
    """A priority waiting line per backend, with a concurrency cap."""

    def __init__(self) -> None:
        self.limits: dict[str, int] = {}

    def configure(self, backend: str, max_concurrency: int) -> None:
        """Set how many requests may run on ``backend`` at once (across all workers)."""
        self.limits[backend] = max(1, max_concurrency)

    @abstractmethod
    def slot(self, backend: str, priority: int = 0, timeout: float = 30.0) -> AbstractAsyncContextManager[None]:
        """Hold one of ``backend``'s slots for the body; raises :class:`QueueWaitExceeded` (503 with
        Retry-After) after ``timeout`` seconds of waiting. Cancellation while waiting gives the place up at
        once."""

    @abstractmethod
    async def depth(self, backend: str) -> int:
        """Requests waiting for or running on ``backend``, in every worker."""

    @abstractmethod
    def running(self, backend: str) -> int:
        """Requests this process runs on ``backend`` now."""

    async def run(self) -> None:
        """Background upkeep until cancelled (renewing this process's leases); nothing to do in-process."""

    async def drain(self) -> None:
        """Wait until every slot given back is released (Redis releases run in the background)."""

    async def start(self) -> None:
        """Run :meth:`run` in a task of its own (for code that has no application's cleanup contexts)."""

    async def close(self) -> None:
        """Stop what :meth:`start` started."""


@dataclass
class _Line:
    limit: int
    running: int = 0
    waiting: list[tuple[int, int, asyncio.Future[None]]] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return self.running + sum(1 for _, _, future in self.waiting if not future.done())


class LocalAdmission(Admission):
    """One process: the line lives in memory."""

    def __init__(self) -> None:
        super().__init__()
        self._lines: dict[str, _Line] = {}
        self._order = itertools.count()

    def configure(self, backend: str, max_concurrency: int) -> None:
        """Set how many requests may run on ``backend`` at once."""
        super().configure(backend, max_concurrency)
        self._lines.setdefault(backend, _Line(1)).limit = self.limits[backend]

    async def depth(self, backend: str) -> int:
        """Requests waiting for or running on ``backend``."""
        line = self._lines.get(backend)
        return line.depth if line else 0

    def running(self, backend: str) -> int:
        """Requests running on ``backend`` now."""
        line = self._lines.get(backend)
        return line.running if line else 0

    @asynccontextmanager
    async def slot(self, backend: str, priority: int = 0, timeout: float = 30.0) -> AsyncIterator[None]:
        """Hold one of ``backend``'s slots for the body (see :meth:`Admission.slot`)."""
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
                raise queue_wait_exceeded(timeout) from None
            raise

    def _release(self, line: _Line) -> None:
        while line.waiting:
            _, _, future = heapq.heappop(line.waiting)
            if not future.done():
                future.set_result(None)  # the slot passes straight to the next in line
                return
        line.running -= 1
