"""Rate limits per account and plan: one interface (:class:`RateLimiter`), an in-process and a Redis
implementation, and :func:`make_limiter` to pick one for a gateway's shared state."""

from __future__ import annotations

from ..clock import Clock
from ..config import LimitsSettings
from ..state import RedisState, SharedState
from .limiter import WINDOW_S, Decision, RateLimiter, go_duration
from .redis_limiter import RedisRateLimiter
from .sliding_window import LocalRateLimiter

__all__ = [
    "WINDOW_S",
    "Decision",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "go_duration",
    "make_limiter",
]


def make_limiter(settings: LimitsSettings, state: SharedState, clock: Clock) -> RateLimiter:
    """Redis windows shared by every worker when the state is Redis, otherwise this process's own."""
    if isinstance(state, RedisState):
        return RedisRateLimiter(
            state.redis, lambda subject: state.key("ratelimit", subject), clock, settings.on_redis_error
        )
    return LocalRateLimiter(clock)
