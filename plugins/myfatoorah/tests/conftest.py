"""Fixtures for the MyFatoorah plugin's tests: a provider against a fake address, and a real simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from myfatoorah_helpers import EVENT_TIME, settings
from resayil_myfatoorah.provider import MyFatoorahProvider
from resayil_myfatoorah.simulator import SIMULATOR, MyFatoorahSimulator, start_simulator

from resayil_gateway.testing import FakeClock

ProviderFactory = Callable[..., Awaitable[MyFatoorahProvider]]


@pytest.fixture(autouse=True)
def _mock_http_works(aioresponses_compat: None) -> None:
    """This suite mocks outbound HTTP with aioresponses: opt in to the core's compatibility shim."""


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock set to the moment of the doc's sample webhook."""
    return FakeClock(EVENT_TIME)


@pytest.fixture
async def provider_for(clock: FakeClock) -> AsyncIterator[ProviderFactory]:
    """Start providers with ``await provider_for(**settings)`` (fake address by default); closed after the test."""
    providers: list[MyFatoorahProvider] = []

    async def start(**values: Any) -> MyFatoorahProvider:
        instance = MyFatoorahProvider(settings(**values), clock=clock)
        await instance.start()
        providers.append(instance)
        return instance

    yield start
    for instance in providers:
        await instance.close()


@pytest.fixture
async def provider(provider_for: ProviderFactory) -> MyFatoorahProvider:
    """A started provider against the fake address (mock it with aioresponses)."""
    return await provider_for()


class RunningSimulator:
    """A simulator on a real socket: its base URL and its state."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url
        self.state: MyFatoorahSimulator = runner.app[SIMULATOR]


@pytest.fixture
async def simulator() -> AsyncIterator[Callable[..., Awaitable[RunningSimulator]]]:
    """Start simulators with ``await simulator(**config)``; all are stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(**config: Any) -> RunningSimulator:
        runner, url = await start_simulator(**config)
        runners.append(runner)
        return RunningSimulator(runner, url)

    yield start
    for runner in runners:
        await runner.cleanup()
