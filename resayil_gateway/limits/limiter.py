"""The rate-limiter interface and its answer: a sliding window of one minute per account.

Why a sliding window (a log of admission times) rather than GCRA or a fixed window: it is exact. No 60-second
window, wherever it starts, ever admits more than the plan's ``requests_per_minute``, and a client may still
send its whole minute's allowance at once. A fixed window lets a double burst through at its boundary; GCRA
with a burst capacity of the limit admits up to twice the limit in some 60-second windows. The price is one
timestamp per admitted request (at most the limit, 60 for Enterprise) per active account.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

WINDOW_S = 60.0  # "requests per minute": the window is a minute by definition


def go_duration(seconds: float) -> str:
    """A duration as OpenAI's ``x-ratelimit-reset-*`` headers write it (Go style): ``12ms``, ``6.5s``, ``1m0s``."""
    ms = max(0, math.ceil(seconds * 1000 - 1e-6))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    minutes, ms = divmod(ms, 60_000)
    whole, fraction = divmod(ms, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0") if fraction else str(whole)
    return f"{minutes}m{text}s" if minutes else f"{text}s"


@dataclass(slots=True)  # not frozen: one is made per request, and a frozen dataclass is slower to build
class Decision:
    """A limiter's answer for one request.

    ``remaining`` counts what is left in the current window after this request; ``reset_s`` is how long until
    the whole allowance is free again; ``retry_after_s`` (refused requests only) is how long until one more
    request would be admitted.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float = 0.0

    def headers(self) -> dict[str, str]:
        """The ``x-ratelimit-*-requests`` headers OpenAI sends, for this decision."""
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": "1m0s" if self.reset_s == WINDOW_S else go_duration(self.reset_s),
        }

    def retry_headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms``, which the OpenAI SDKs honour."""
        return {
            "Retry-After": str(max(1, math.ceil(self.retry_after_s - 1e-9))),
            "retry-after-ms": str(max(1, math.ceil(self.retry_after_s * 1000 - 1e-6))),
        }


class RateLimiter(ABC):
    """Admits at most ``limit`` requests per subject in any window of :data:`WINDOW_S` seconds.

    Refused requests are not counted, so a client that keeps retrying is admitted again as soon as its oldest
    admission leaves the window.
    """

    @abstractmethod
    async def acquire(self, subject: str, limit: int) -> Decision:
        """Count one request for ``subject`` if its window has room, and say what happened."""

    async def start(self) -> None:
        """Prepare (e.g. load a script); called when the gateway starts its services."""

    async def close(self) -> None:
        """Release what :meth:`start` took."""


def decide(times_count: int, limit: int, admitted: bool, now: float, newest: float, blocking: float) -> Decision:
    """Build the decision from a window's state: its size after the request, the newest admission and the
    admission whose leaving the window frees a place (``blocking``; used only when refused)."""
    if admitted:
        return Decision(True, limit, max(0, limit - times_count), newest + WINDOW_S - now)
    return Decision(False, limit, 0, newest + WINDOW_S - now, blocking + WINDOW_S - now)
