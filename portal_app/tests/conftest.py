"""Portal tests: a gateway with the portal plugin and a fake backend, on SQLite and PostgreSQL + Redis."""

from __future__ import annotations

from typing import Any

import pytest
from resayil_portal import plugin as portal_plugin

from resayil_gateway.app import create_app
from resayil_gateway.testing import FakeBackend, FakeBackendPlugin


@pytest.fixture
async def portal(make_gateway, clock, aiohttp_client) -> Any:
    """An HTTP client on the gateway app with the portal plugin (``client.gateway`` is the gateway)."""
    gateway = make_gateway(clock=clock, plugins=[portal_plugin, FakeBackendPlugin(FakeBackend())])
    client = await aiohttp_client(create_app(gateway))
    client.gateway = gateway
    return client
