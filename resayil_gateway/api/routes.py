"""The API's routes, served under both ``/v1`` and ``/api/v1`` (clients and proxies use either)."""

from __future__ import annotations

from aiohttp import web

from .chat import chat_completions, embeddings
from .health import healthz, readyz
from .metrics import metrics_handler
from .models import get_model, list_models
from .openapi import openapi_handler
from .paths import API_PREFIXES

__all__ = ["API_PREFIXES", "api_routes"]


def api_routes() -> list[web.RouteDef]:
    """Every core route."""
    routes = [
        web.get("/healthz", healthz, name="healthz"),
        web.get("/readyz", readyz, name="readyz"),
        web.get("/metrics", metrics_handler, name="metrics"),
        web.get("/openapi.json", openapi_handler, name="openapi"),
    ]
    for prefix in API_PREFIXES:
        routes += [
            web.post(f"{prefix}/chat/completions", chat_completions),
            web.post(f"{prefix}/embeddings", embeddings),
            web.get(f"{prefix}/models", list_models, allow_head=False),
            web.get(f"{prefix}/models/{{model:.+}}", get_model, allow_head=False),
        ]
    return routes
