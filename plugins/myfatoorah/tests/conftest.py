"""Fixtures for the MyFatoorah plugin's tests: a provider against a fake address, and a real simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from myfatoorah_helpers import EVENT_TIME, settings
from resayil_myfatoorah.provider import MyFatoorahProvider
from resayil_myfatoorah.simulator import SIMULATOR, MyFatoorahSimulator, start_simulator

from resayil_gateway.testing import FakeClock, RunningServer, running_servers, started_each

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

    def make(**values: Any) -> MyFatoorahProvider:
        return MyFatoorahProvider(settings(**values), clock=clock)

    async with started_each(make) as start:
        yield start


@pytest.fixture
async def provider(provider_for: ProviderFactory) -> MyFatoorahProvider:
    """A started provider against the fake address (mock it with aioresponses)."""
    return await provider_for()


@pytest.fixture
async def simulator() -> AsyncIterator[Callable[..., Awaitable[RunningServer[MyFatoorahSimulator]]]]:
    """Start simulators with ``await simulator(**config)``; all are stopped after the test."""
    async with running_servers(start_simulator, SIMULATOR) as start:
        yield start
