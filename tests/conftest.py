"""Core tests. Fixtures (``gateway``, ``make_gateway``, ``stack``, ``clock``, ``fake_backend``) come from
``resayil_gateway.testing``, a pytest plugin the core installs; store-backed tests run on SQLite and on
PostgreSQL + Redis."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from resayil_gateway.state import RedisState
from resayil_gateway.testing import REDIS_URL


@pytest.fixture
async def redis_state() -> AsyncIterator[RedisState]:
    """A started Redis state with keys of its own (skips when Redis is not reachable); closed afterwards."""
    state = RedisState(REDIS_URL, uuid.uuid4().hex, "t" + uuid.uuid4().hex[:12])
    try:
        await asyncio.wait_for(state.start(), 5)
    except Exception as exc:
        await state.close()
        pytest.skip(f"Redis at {REDIS_URL} is not reachable ({type(exc).__name__})")
    yield state
    await state.close()
