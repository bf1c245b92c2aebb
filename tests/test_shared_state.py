"""The Redis broadcast channel proves itself alive by heartbeat, so workers keep trusting their caches: with the
channel alive, an API key is looked up in the store once, not on every request."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from resayil_gateway import state as state_module
from resayil_gateway.state import RedisState

# Short enough for a quick test, long enough that a loaded CI box's scheduling stalls (tens of ms) stay well
# inside the slack a heartbeat leaves (the channel counts as alive for two of them).
HEARTBEAT_S = 0.25


@pytest.fixture
def fast_heartbeat(monkeypatch: Any) -> None:
    monkeypatch.setattr(state_module, "HEARTBEAT_S", HEARTBEAT_S)


async def test_the_channel_stays_alive_across_many_heartbeats(fast_heartbeat: None, redis_state: RedisState) -> None:
    dead = 0
    until = time.monotonic() + 10 * HEARTBEAT_S  # five times the two heartbeats a PONG keeps it alive for
    while time.monotonic() < until:
        dead += not redis_state.channel_alive
        await asyncio.sleep(HEARTBEAT_S / 10)
    assert dead == 0


@pytest.mark.parametrize("stack", ["postgres"])
async def test_a_key_is_read_from_the_store_once_while_the_channel_is_alive(
    fast_heartbeat: None, gateway_client: Any, monkeypatch: Any
) -> None:
    client = await gateway_client()
    keys = client.gateway.keys
    lookups = 0
    original = keys._lookup

    async def counting(key_hash: str) -> Any:
        nonlocal lookups
        lookups += 1
        return await original(key_hash)

    monkeypatch.setattr(keys, "_lookup", counting)
    assert (await client.get("/v1/models", headers=client.auth)).status == 200
    await asyncio.sleep(6 * HEARTBEAT_S)  # well past the first heartbeats after subscribing
    for _ in range(3):
        assert (await client.get("/v1/models", headers=client.auth)).status == 200
    assert lookups == 1


async def test_closing_ends_the_listener_between_reads_at_once_without_cancelling_it(redis_state: RedisState) -> None:
    listener = redis_state._listener
    assert listener is not None
    await asyncio.sleep(0.05)  # the listener is waiting in a read (for up to a whole heartbeat)
    started = time.monotonic()
    await redis_state.close()
    assert time.monotonic() - started < state_module.HEARTBEAT_S / 2
    assert listener.done() and not listener.cancelled()
