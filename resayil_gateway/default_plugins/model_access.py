"""Default ``check_access``: restricted models do not exist; otherwise the caller's plan selectors decide."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GatewayError, ModelNotFound, PermissionDenied
from ..hookspecs import hookimpl
from ..routing.catalog import plan_allows

if TYPE_CHECKING:
    from ..domain import Caller, ModelInfo
    from ..gateway import Gateway


@hookimpl(trylast=True)
def check_access(caller: Caller, model: ModelInfo, gateway: Gateway) -> GatewayError | None:
    """Hide restricted models (404) and refuse models outside the caller's plan (403)."""
    if gateway.catalog.is_restricted(model.id):
        return ModelNotFound(f"The model `{model.id}` does not exist or you do not have access to it.", param="model")
    plan = gateway.settings.plan(caller.plan)
    if not plan_allows(plan.models, model):
        return PermissionDenied(
            f"The model `{model.id}` is not included in the {plan.name.en} plan. Upgrade to use it.",
            param="model",
        )
    return None
