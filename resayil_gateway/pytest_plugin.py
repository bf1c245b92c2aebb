"""pytest fixtures for testing the gateway and its plugins (registered through the ``pytest11`` entry point).

Loading this module only defines named fixtures: nothing is patched and no test changes unless it asks for
a fixture. ``async def test_x(gateway): ...`` runs once on SQLite + in-process state and once on PostgreSQL +
Redis (skipped, with the reason, when they are not reachable). ``RESAYIL_TEST_POSTGRES`` and
``RESAYIL_TEST_REDIS`` override the default addresses; ``RESAYIL_TEST_STACKS=sqlite`` limits the stacks.
``aioresponses_compat`` is opt-in; ``gateway_client`` starts the whole application for a test.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import types
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .gateway import Gateway
from .testing import (
    REDIS_URL,
    FakeBackend,
    FakeBackendPlugin,
    FakeClock,
    _on_store,
    _postgres_reachable,
    build_gateway,
    create_postgres_database,
    create_sqlite_template,
    drop_postgres_database,
    seed_account,
    truncate_all,
)

_STACKS = [name.strip() for name in os.environ.get("RESAYIL_TEST_STACKS", "sqlite,postgres").split(",")]


@pytest.fixture
def aioresponses_compat(monkeypatch: Any) -> None:
    """Opt in (request it, or make it autouse in your own conftest) to let aioresponses (0.7.9) build
    responses on aiohttp >= 3.12, which added ``stream_writer``; undone after the test. A no-op where
    aioresponses is not installed or already compatible."""
    try:
        import aioresponses.core
        from aiohttp import ClientResponse
    except ImportError:
        return
    if "stream_writer" not in inspect.signature(ClientResponse.__init__).parameters:
        return

    class CompatResponse(ClientResponse):
        def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
            super().__init__(method, url, **kwargs)

    monkeypatch.setattr(aioresponses.core, "ClientResponse", CompatResponse)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: Any) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    return asyncio.run(create_sqlite_template(path))


@pytest.fixture(scope="session")
def _postgres_database() -> Any:
    reason = asyncio.run(_postgres_reachable())
    if reason:
        yield None, reason
        return
    url = asyncio.run(create_postgres_database())
    yield url, None
    asyncio.run(drop_postgres_database(url))


@pytest.fixture(params=[s for s in ("sqlite", "postgres") if s in _STACKS])
def stack(request: Any) -> str:
    """Which store and state the test runs on: ``sqlite`` (in-process) or ``postgres`` (with Redis)."""
    return str(request.param)


@dataclass
class StackInfo:
    """Where a test's gateway keeps its data."""

    name: str
    database_url: str
    redis_url: str
    # parallel test runs share one Redis: each test keeps its keys apart
    redis_prefix: str = field(default_factory=lambda: "t" + uuid.uuid4().hex[:12])


@pytest.fixture
def stack_info(stack: str, request: Any, tmp_path: Path) -> StackInfo:
    """The database and Redis URLs of the current stack, with a clean schema."""
    if stack == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        target = tmp_path / "resayil.db"
        shutil.copyfile(template, target)
        return StackInfo("sqlite", f"sqlite+aiosqlite:///{target}", "")
    url, reason = request.getfixturevalue("_postgres_database")
    if url is None:
        pytest.skip(reason)
    asyncio.run(_on_store(url, truncate_all))
    return StackInfo("postgres", url, REDIS_URL)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at 2026-01-15 09:00 UTC."""
    return FakeClock()


@pytest.fixture
def fake_backend() -> FakeBackend:
    """A scripted local backend serving ``fake-small`` and ``fake-medium``."""
    return FakeBackend()


@pytest.fixture
async def make_gateway(stack_info: StackInfo) -> AsyncIterator[Any]:
    """A factory of gateways on the current stack; every gateway it made is disposed of afterwards."""
    made: list[Gateway] = []

    def factory(**kwargs: Any) -> Gateway:
        kwargs.setdefault("redis_url", stack_info.redis_url)
        kwargs.setdefault("redis_prefix", stack_info.redis_prefix)
        gateway = build_gateway(stack_info.database_url, **kwargs)
        made.append(gateway)
        return gateway

    yield factory
    for gateway in made:
        # a pool stuck on a cancelled connection must not hang the run (wait, not wait_for: no unwinding wait)
        await asyncio.wait([asyncio.ensure_future(gateway.store.dispose())], timeout=10)


@pytest.fixture
async def gateway(make_gateway: Any, clock: FakeClock) -> Gateway:
    """A migrated gateway on the current stack with the fake clock and no backends."""
    gateway: Gateway = make_gateway(clock=clock)
    return gateway


@pytest.fixture
async def gateway_client(make_gateway: Any, aiohttp_client: Any, clock: FakeClock) -> Any:
    """A factory starting the whole application on the current stack:
    ``client = await gateway_client(*plugins, backends=(FakeBackend(),), credits=100, overrides=..., plan=None)``.
    The client carries ``gateway``, ``account`` (a seeded account) and ``auth`` (its Authorization header)."""
    from .app import create_app

    async def start(
        *plugins: Any,
        backends: Iterable[Any] | None = None,
        credits: int = 100,
        plan: str | None = None,
        overrides: Any = None,
        server_kwargs: Any = None,
        **gateway_kwargs: Any,
    ) -> Any:
        registered = [FakeBackendPlugin(*(FakeBackend(),) if backends is None else tuple(backends)), *plugins]
        gateway_kwargs.setdefault("clock", clock)
        gateway = make_gateway(plugins=registered, overrides=overrides, **gateway_kwargs)
        client = await aiohttp_client(create_app(gateway), server_kwargs=server_kwargs or {})
        client.gateway = gateway
        client.account = await seed_account(gateway, credits=credits, plan=plan)
        client.auth = {"Authorization": f"Bearer {client.account.key}"}
        return client

    return start
