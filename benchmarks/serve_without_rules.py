"""``resayil serve`` with the traffic rules switched off, for the benchmark's "rules off" comparison only.

The same command line as ``resayil serve``, except that every gateway it builds admits every request at once:
the rate limiter counts nothing (no Redis round trip) and the shared waiting line is bypassed (no slot taken,
depth always 0). Measured back to back against the normal gateway, the difference is what the per-plan rate
limit and the shared queue cost per request. Never use it to serve anyone.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from resayil_gateway import gateway as gateway_module
from resayil_gateway.cli import main
from resayil_gateway.limits import Decision, RateLimiter
from resayil_gateway.routing.admission import Admission

_ALWAYS = Decision(allowed=True, limit=1_000_000, remaining=1_000_000, reset_s=60.0)


class CountNothing(RateLimiter):
    """A rate limiter that admits everything without counting."""

    async def acquire(self, subject: str, limit: int) -> Decision:
        """Always allowed; nothing is recorded anywhere."""
        return _ALWAYS


class NoLine(Admission):
    """A waiting line that never makes anyone wait and counts nobody."""

    def slot(self, backend: str, priority: int = 0, timeout: float = 30.0) -> AbstractAsyncContextManager[None]:
        """A slot that is always free."""
        return _free()

    async def depth(self, backend: str) -> int:
        """Always 0: nothing is counted."""
        return 0

    def running(self, backend: str) -> int:
        """Always 0: nothing is counted."""
        return 0


@asynccontextmanager
async def _free() -> AsyncIterator[None]:
    yield


def _no_limiter(*_args: Any, **_kwargs: Any) -> RateLimiter:
    return CountNothing()


def _no_line(*_args: Any, **_kwargs: Any) -> Admission:
    return NoLine()


if __name__ == "__main__":
    gateway_module.make_limiter = _no_limiter  # type: ignore[assignment]
    gateway_module.make_admission = _no_line  # type: ignore[assignment]
    sys.exit(main())
