"""Fixtures for the WhatsApp tests: channels against fake hosts (mocked with aioresponses) and a real sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from resayil_whatsapp.channel import WhatsAppChannel
from resayil_whatsapp.settings import WhatsAppSettings
from resayil_whatsapp.sink import SINK, Sink, start_sink


class RunningSink:
    """A sink on a real socket: its base URL and its state."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url
        self.state: Sink = runner.app[SINK]


SinkFactory = Callable[..., Awaitable[RunningSink]]
ChannelFactory = Callable[[WhatsAppSettings], Awaitable[WhatsAppChannel]]


@pytest.fixture(autouse=True)
def _mock_http_works(aioresponses_compat: None) -> None:
    """This suite mocks outbound HTTP with aioresponses: opt in to the core's compatibility shim."""


@pytest.fixture
async def sink() -> AsyncIterator[SinkFactory]:
    """Start sinks with ``await sink(**config)``; all are stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(**config: Any) -> RunningSink:
        runner, url = await start_sink(**config)
        runners.append(runner)
        return RunningSink(runner, url)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def channel_for() -> AsyncIterator[ChannelFactory]:
    """Start channels with ``await channel_for(settings)``; all are closed after the test."""
    channels: list[WhatsAppChannel] = []

    async def start(settings: WhatsAppSettings) -> WhatsAppChannel:
        channel = WhatsAppChannel(settings)
        await channel.start()
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        await channel.close()
