"""Fixtures for the WhatsApp tests: channels against fake hosts (mocked with aioresponses), a real sink, and
gateways on the test stack whose WhatsApp plugin delivers to a sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from resayil_whatsapp.channel import WhatsAppChannel
from resayil_whatsapp.settings import WhatsAppSettings
from resayil_whatsapp.sink import SINK, Sink, start_sink
from whatsapp_helpers import SINK_TOKEN, sink_env

from resayil_gateway.testing import RunningServer, running_servers, started_each

SinkFactory = Callable[..., Awaitable[RunningServer[Sink]]]
ChannelFactory = Callable[[WhatsAppSettings], Awaitable[WhatsAppChannel]]
GatewayFactory = Callable[..., Any]


@pytest.fixture(autouse=True)
def _mock_http_works(aioresponses_compat: None) -> None:
    """This suite mocks outbound HTTP with aioresponses: opt in to the core's compatibility shim."""


@pytest.fixture
async def sink() -> AsyncIterator[SinkFactory]:
    """Start sinks with ``await sink(**config)``; all are stopped after the test."""
    async with running_servers(start_sink, SINK) as start:
        yield start


@pytest.fixture
async def channel_for() -> AsyncIterator[ChannelFactory]:
    """Start channels with ``await channel_for(settings)``; all are closed after the test."""
    async with started_each(WhatsAppChannel) as start:
        yield start


@pytest.fixture
async def gateway_to_sink(make_gateway: Any, clock: Any) -> AsyncIterator[GatewayFactory]:
    """Build gateways on the current stack (fake clock) with the WhatsApp plugin from its entry point:
    ``gateway_to_sink(sink_url, token=..., plugins=..., overrides=..., **whatsapp_settings)``. Their channels
    are closed after the test."""
    made: list[Any] = []

    def build(sink_url: str, token: str = SINK_TOKEN, plugins: Any = (), overrides: Any = None, **whatsapp: Any) -> Any:
        env = sink_env(sink_url, token, **whatsapp)
        gateway = make_gateway(clock=clock, plugins=plugins, overrides=overrides, load_entrypoints=True, env=env)
        assert isinstance(gateway.channels["whatsapp"], WhatsAppChannel)
        made.append(gateway)
        return gateway

    yield build
    for gateway in made:
        await gateway.channels["whatsapp"].close()
