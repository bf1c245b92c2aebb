"""``GET /metrics``: the gateway's Prometheus metrics (see :mod:`resayil_gateway.metrics`)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..web_keys import GATEWAY


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics`` in Prometheus text format."""
    gateway = request.app[GATEWAY]
    metrics = gateway.metrics
    for name in gateway.backends:
        metrics.child(metrics.queue_depth, name).set(await gateway.admission.depth(name))
    budget = await gateway.cloud_budget.status()
    metrics.cloud_budget_used.set(budget.used)
    metrics.cloud_budget_limit.set(budget.limit)
    body = gateway.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
