"""Fixtures for the WhatsApp tests: channels against fake hosts (mocked with aioresponses) and a real sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from resayil_whatsapp.channel import WhatsAppChannel
from resayil_whatsapp.settings import WhatsAppSettings
from resayil_whatsapp.sink import SINK, Sink, start_sink

from resayil_gateway.testing import RunningServer, running_servers, started_each

SinkFactory = Callable[..., Awaitable[RunningServer[Sink]]]
ChannelFactory = Callable[[WhatsAppSettings], Awaitable[WhatsAppChannel]]


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
