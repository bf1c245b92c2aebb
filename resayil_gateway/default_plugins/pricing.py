"""Default ``price_usage``: ``ceil(total_tokens × multiplier / 1000)`` credits, at least 1 when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..billing.pricing import credits_for
from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..domain import Caller, ModelInfo, Usage
    from ..gateway import Gateway


@hookimpl(trylast=True)
def price_usage(caller: Caller, model: ModelInfo, backend: str, usage: Usage, gateway: Gateway) -> int:
    """Credits at the requested model's multiplier, wherever the request ran."""
    return credits_for(usage, model.multiplier)
