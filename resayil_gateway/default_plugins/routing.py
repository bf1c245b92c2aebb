"""Default ``choose_backend``: where the catalog says the model lives, failing over to its cloud equivalent
when the local line is too deep or the local backend is missing (SPEC §5.4, ``routing/failover.py``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..routing.failover import cloud_route, home_route, route_by_depth

if TYPE_CHECKING:
    from ..domain import Caller, ChatRequest, ModelInfo
    from ..gateway import Gateway
    from ..routing.backends import Route


@hookimpl(trylast=True)
def choose_backend(
    caller: Caller, chat_request: ChatRequest, model: ModelInfo, gateway: Gateway
) -> Route | Awaitable[Route] | None:
    """Run the model where the catalog says it lives; when failover may apply, return an awaitable that reads
    the local queue depth (shared by all workers) and picks the cloud above ``failover_queue_depth``."""
    home = home_route(gateway, model)
    cloud = cloud_route(gateway, caller, model) if model.kind == "local" else None
    if home is None or cloud is None:
        return home or cloud
    return route_by_depth(gateway, home, cloud)
