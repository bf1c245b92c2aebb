"""What a usage costs: ``ceil(total_tokens × multiplier / 1000)`` credits, at least 1 when anything was used."""

from __future__ import annotations

import math

from ..domain import Usage

TOKENS_PER_CREDIT = 1000


def credits_for(usage: Usage, multiplier: float) -> int:
    """Credits for ``usage`` at ``multiplier``; 0 only when no token at all was used."""
    tokens = usage.total_tokens
    if tokens <= 0:
        return 0
    # round the product first so 0.1 + 0.2-style float noise never adds a credit
    return max(1, math.ceil(round(tokens * multiplier, 6) / TOKENS_PER_CREDIT))


def hold_usage(prompt_estimate: int, max_tokens: int | None, default_hold_tokens: int) -> Usage:
    """The usage a hold is sized for: the prompt estimate plus ``max_tokens`` (or the configured default)."""
    return Usage(prompt_estimate, max_tokens if max_tokens is not None else default_hold_tokens)
