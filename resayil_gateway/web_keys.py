"""Typed keys for what the web application and each request carry: ``request.app[GATEWAY]`` in any handler."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .gateway import Gateway

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
MODEL: web.RequestKey[str] = web.RequestKey("model", str)
