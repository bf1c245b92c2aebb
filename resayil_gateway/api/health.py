"""``GET /healthz`` (the process is alive) and ``GET /readyz`` (database, shared state and backends answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web

from ..web_keys import GATEWAY

CHECK_TIMEOUT_S = 3.0


async def healthz(request: web.Request) -> web.Response:
    """Alive: answers as long as the event loop runs."""
    return web.json_response({"status": "ok"})


async def _check(name: str, probe: Awaitable[object]) -> tuple[str, str]:
    try:
        result = await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as exc:
        return name, f"error: {type(exc).__name__}"
    if result is False:
        return name, "error: not ready"
    return name, "ok"


async def readyz(request: web.Request) -> web.Response:
    """Ready: 200 when the database, the shared state and every backend answer; 503 naming what does not."""
    gateway = request.app[GATEWAY]
    probes = [_check("database", gateway.store.ping()), _check("state", gateway.state.ping())]
    probes += [_check(f"backend:{name}", backend.ready()) for name, backend in gateway.backends.items()]
    checks = dict(await asyncio.gather(*probes))
    ready = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )
