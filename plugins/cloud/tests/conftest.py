"""Fixtures for the cloud plugin's tests: a backend against a fake address, and a real simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from cloud_helpers import FAKE_KEY, FAKE_URL
from resayil_cloud.backend import CloudBackend
from resayil_cloud.settings import CloudSettings
from resayil_cloud.simulator import SIMULATOR, SIMULATOR_API_KEY, Simulator, start_simulator


@pytest.fixture(autouse=True)
def _mock_http_works(aioresponses_compat: None) -> None:
    """This suite mocks outbound HTTP with aioresponses: opt in to the core's compatibility shim."""


@pytest.fixture
async def backend() -> AsyncIterator[CloudBackend]:
    """A CloudBackend (Ollama dialect) started against a fake address with a key, without discovery."""
    instance = CloudBackend(CloudSettings(url=FAKE_URL, api_key=FAKE_KEY, discover=False))
    await instance.start()
    yield instance
    await instance.close()


class RunningSimulator:
    """A simulator on a real socket: its base URL and its state."""

    def __init__(self, runner: web.AppRunner, url: str) -> None:
        self.runner = runner
        self.url = url
        self.state: Simulator = runner.app[SIMULATOR]


SimulatorFactory = Callable[..., Awaitable[RunningSimulator]]
BackendFactory = Callable[..., Awaitable[CloudBackend]]


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorFactory]:
    """Start simulators with ``await simulator(**config)``; all are stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(**config: Any) -> RunningSimulator:
        runner, url = await start_simulator(**config)
        runners.append(runner)
        return RunningSimulator(runner, url)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def backend_for() -> AsyncIterator[BackendFactory]:
    """Start backends with ``await backend_for(url, **settings)`` (the simulator's key, no discovery by
    default); all are closed after the test."""
    backends: list[CloudBackend] = []

    async def start(url: str, **settings: Any) -> CloudBackend:
        values = {"discover": False, "api_key": SIMULATOR_API_KEY, **settings}
        instance = CloudBackend(CloudSettings(url=url, **values))
        await instance.start()
        backends.append(instance)
        return instance

    yield start
    for instance in backends:
        await instance.close()
