"""Rate limits per account and plan: one interface (:class:`RateLimiter`), an in-process and a Redis
implementation, and :func:`make_limiter` to pick one for a gateway's shared state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..clock import Clock
from ..config import LimitsSettings
from ..state import RedisState, SharedState
from .limiter import WINDOW_S, Decision, RateLimiter, go_duration
from .sliding_window import LocalRateLimiter

if TYPE_CHECKING:
    from .redis_limiter import RedisRateLimiter

__all__ = [
    "WINDOW_S",
    "Decision",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "go_duration",
    "make_limiter",
]


def __getattr__(name: str) -> Any:
    # the Redis limiter (and the Redis client, ~6 MB) loads only where Redis is configured
    if name == "RedisRateLimiter":
        from .redis_limiter import RedisRateLimiter

        return RedisRateLimiter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_limiter(settings: LimitsSettings, state: SharedState, clock: Clock) -> RateLimiter:
    """Redis windows shared by every worker when the state is Redis, otherwise this process's own."""
    if isinstance(state, RedisState):
        from .redis_limiter import RedisRateLimiter

        return RedisRateLimiter(
            state.redis,
            lambda subject: state.key("ratelimit", subject),
            clock,
            settings.on_redis_error,
            scripts=state.scripts,
            timeout_s=settings.redis_timeout_s,
        )
    return LocalRateLimiter(clock)
