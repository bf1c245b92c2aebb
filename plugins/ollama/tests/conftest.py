"""Fixtures for the Ollama plugin's tests: a backend against a fake address, and a real simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from ollama_helpers import FAKE_URL
from resayil_ollama.backend import OllamaBackend
from resayil_ollama.settings import OllamaSettings
from resayil_ollama.simulator import SIMULATOR, Simulator, start_simulator

from resayil_gateway.testing import RunningServer, running_servers, started_each

SimulatorFactory = Callable[..., Awaitable[RunningServer[Simulator]]]
BackendFactory = Callable[..., Awaitable[OllamaBackend]]


@pytest.fixture(autouse=True)
def _mock_http_works(aioresponses_compat: None) -> None:
    """This suite mocks outbound HTTP with aioresponses: opt in to the core's compatibility shim."""


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorFactory]:
    """Start simulators with ``await simulator(**config)``; all are stopped after the test."""
    async with running_servers(start_simulator, SIMULATOR) as start:
        yield start


def _backend(url: str, **settings: Any) -> OllamaBackend:
    return OllamaBackend(OllamaSettings(url=url, **{"discover": False, **settings}))


@pytest.fixture
async def backend_for() -> AsyncIterator[BackendFactory]:
    """Start backends with ``await backend_for(url, **settings)``; all are closed after the test."""
    async with started_each(_backend) as start:
        yield start


@pytest.fixture
async def backend(backend_for: BackendFactory) -> OllamaBackend:
    """An OllamaBackend started against a fake address (mock it with aioresponses), without discovery."""
    return await backend_for(FAKE_URL)
