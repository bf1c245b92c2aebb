"""Default ``authenticate``: the ``Authorization: Bearer rsk-…`` API key, through the key cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from aiohttp import web

    from ..gateway import Gateway


@hookimpl(trylast=True)
def authenticate(request: web.Request, gateway: Gateway) -> Any:
    """The caller owning the bearer key (an awaitable), or an ``AuthenticationFailed`` saying why not."""
    return gateway.keys.authenticate(request.headers.get("Authorization"))
