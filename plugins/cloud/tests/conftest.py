"""Fixtures for the cloud plugin's tests: a backend against a fake address, and a real simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from cloud_helpers import FAKE_KEY, FAKE_URL
from resayil_cloud.backend import CloudBackend
from resayil_cloud.settings import CloudSettings
from resayil_cloud.simulator import SIMULATOR, SIMULATOR_API_KEY, Simulator, start_simulator

from resayil_gateway.testing import RunningServer, running_servers, started_each

SimulatorFactory = Callable[..., Awaitable[RunningServer[Simulator]]]
BackendFactory = Callable[..., Awaitable[CloudBackend]]


@pytest.fixture(autouse=True)
def _mock_http_works(aioresponses_compat: None) -> None:
    """This suite mocks outbound HTTP with aioresponses: opt in to the core's compatibility shim."""


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorFactory]:
    """Start simulators with ``await simulator(**config)``; all are stopped after the test."""
    async with running_servers(start_simulator, SIMULATOR) as start:
        yield start


def _backend(url: str, **settings: Any) -> CloudBackend:
    return CloudBackend(CloudSettings(url=url, **{"discover": False, "api_key": SIMULATOR_API_KEY, **settings}))


@pytest.fixture
async def backend_for() -> AsyncIterator[BackendFactory]:
    """Start backends with ``await backend_for(url, **settings)`` (the simulator's key, no discovery by
    default); all are closed after the test."""
    async with started_each(_backend) as start:
        yield start


@pytest.fixture
async def backend(backend_for: BackendFactory) -> CloudBackend:
    """A CloudBackend (Ollama dialect) started against a fake address with a key, without discovery."""
    return await backend_for(FAKE_URL, api_key=FAKE_KEY)
