"""The in-process rate limiter: one worker's sliding windows, in memory, on the injectable clock."""

from __future__ import annotations

from collections import deque

from ..clock import Clock
from .limiter import WINDOW_S, Decision, RateLimiter, decide


class LocalRateLimiter(RateLimiter):
    """Sliding one-minute windows kept in this process (one worker, or the fallback when Redis is down).

    Times come from ``clock.monotonic()``, so a wall-clock jump never frees or blocks a window.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._windows: dict[str, deque[float]] = {}
        self._next_sweep = 0.0

    async def acquire(self, subject: str, limit: int) -> Decision:
        """Admit and count the request when fewer than ``limit`` were admitted in the last minute."""
        return self.acquire_now(subject, limit)

    def acquire_now(self, subject: str, limit: int) -> Decision:
        """:meth:`acquire` without awaiting (no I/O happens here)."""
        now = self.clock.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        window = self._windows.get(subject)
        if window is None:
            window = self._windows[subject] = deque()
        horizon = now - WINDOW_S
        while window and window[0] <= horizon:
            window.popleft()
        count = len(window)
        if count < limit:
            window.append(now)
            return decide(count + 1, limit, True, now, now, now)
        # A lowered limit (a plan downgrade) may leave more than ``limit`` in the window: wait for enough to leave.
        return decide(count, limit, False, now, window[-1], window[count - limit])

    def _sweep(self, now: float) -> None:
        """Forget accounts idle for a whole window, once a minute, so memory follows active accounts only."""
        horizon = now - WINDOW_S
        for subject in [s for s, window in self._windows.items() if not window or window[-1] <= horizon]:
            del self._windows[subject]
        self._next_sweep = now + WINDOW_S
