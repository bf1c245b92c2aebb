"""Default ``choose_backend``: the backend the catalog names for the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..routing.backends import Route

if TYPE_CHECKING:
    from ..domain import Caller, ChatRequest, ModelInfo
    from ..gateway import Gateway


@hookimpl(trylast=True)
def choose_backend(caller: Caller, chat_request: ChatRequest, model: ModelInfo, gateway: Gateway) -> Route | None:
    """Run the model where the catalog says it lives."""
    backend = gateway.backends.get(model.backend)
    if backend is None:
        return None
    return Route(backend, model.name_upstream, model)
