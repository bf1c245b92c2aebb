"""The landing page: hero, how it works, pricing, models, code examples, sign-up."""

from __future__ import annotations

from aiohttp import web

from .context import Portal


def landing_routes(portal: Portal) -> list[web.RouteDef]:
    """The routes of this module."""
    gateway = portal.gateway

    async def landing(request: web.Request) -> web.Response:
        catalog = gateway.catalog
        models = [model for model in catalog.all() if not catalog.is_restricted(model.id)]
        context = {
            "models": models,
            "base_url": gateway.settings.gateway.public_url + "/v1",
            "example_model": models[0].id if models else "llama3.2:3b",
        }
        return await portal.render(request, "landing.html", context)

    return [web.get("/", landing)]
