"""Default ``check_access``: restricted models do not exist; otherwise the caller's plan selectors decide.

The rules themselves are plain functions in :mod:`resayil_gateway.routing.catalog` (``may_serve``,
``allowed_cloud_equivalent``, ``route_allowed``, ``unlocking_plan``), so that failover and every other path
apply the same ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GatewayError, ModelNotFound, PermissionDenied
from ..hookspecs import hookimpl
from ..routing.catalog import is_restricted_model, plan_allows, unlocking_plan

if TYPE_CHECKING:
    from ..domain import Caller, ModelInfo
    from ..gateway import Gateway


@hookimpl(trylast=True)
def check_access(caller: Caller, model: ModelInfo, gateway: Gateway) -> GatewayError | None:
    """Hide restricted models (404) and refuse models outside the caller's plan (403, naming the plan that
    includes them)."""
    if is_restricted_model(gateway.catalog, model):
        return ModelNotFound(f"The model `{model.id}` does not exist or you do not have access to it.", param="model")
    plan = gateway.settings.plan(caller.plan)
    if plan_allows(plan.models, model):
        return None
    unlocking_id = unlocking_plan(gateway.settings.plans, model)
    if unlocking_id is None:
        return PermissionDenied(f"The model `{model.id}` is not available on the {plan.name.en} plan.", param="model")
    return PermissionDenied(
        f"The model `{model.id}` is not included in the {plan.name.en} plan. "
        f"Upgrade to the {gateway.settings.plans[unlocking_id].name.en} plan to use it.",
        param="model",
        extra={"required_plan": unlocking_id},
    )
