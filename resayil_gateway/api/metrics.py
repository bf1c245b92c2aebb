"""``GET /metrics``: the gateway's Prometheus metrics (see :mod:`resayil_gateway.metrics`)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..web_keys import GATEWAY


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics`` in Prometheus text format."""
    gateway = request.app[GATEWAY]
    for name in gateway.backends:
        gateway.metrics.child(gateway.metrics.queue_depth, name).set(gateway.admission.depth(name))
    body = gateway.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
