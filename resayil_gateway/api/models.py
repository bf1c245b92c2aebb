"""``GET /v1/models`` and ``GET /v1/models/{id}``: exactly the models the caller may use."""

from __future__ import annotations

import orjson
from aiohttp import web

from ..web_keys import GATEWAY
from .chat import JSON_HEADERS, authenticate, resolve_model
from .openai_format import model_list, model_object


async def list_models(request: web.Request) -> web.Response:
    """The caller's models: never a restricted one, never one the plan excludes."""
    gateway = request.app[GATEWAY]
    caller = await authenticate(request, gateway)
    allowed = []
    for model in gateway.catalog.all():
        if not await gateway.refusals(caller, model):
            allowed.append(model)
    return web.Response(body=orjson.dumps(model_list(allowed)), headers=JSON_HEADERS)


async def get_model(request: web.Request) -> web.Response:
    """One model object, or 404 ``model_not_found`` (also for restricted ones)."""
    gateway = request.app[GATEWAY]
    caller = await authenticate(request, gateway)
    model = await resolve_model(gateway, caller, request.match_info["model"])
    return web.Response(body=orjson.dumps(model_object(model)), headers=JSON_HEADERS)
