"""Redis scripts called during one event-loop iteration share one pipeline (one round trip), and each caller
still gets its own reply or its own error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from resayil_gateway.state import RedisState
from resayil_gateway.state.script_batch import ScriptBatch


@pytest.fixture
def state(redis_state: RedisState) -> RedisState:
    """A started Redis state of its own (its ``scripts`` is the batch under test)."""
    return redis_state


def fresh_script(state: RedisState, body: str) -> Any:
    """A script the server has never seen (a unique comment), so its first call meets NOSCRIPT."""
    return state.redis.register_script(f"-- {uuid.uuid4().hex}\n{body}")


def count_round_trips(batch: ScriptBatch, monkeypatch: Any) -> list[int]:
    sizes: list[int] = []
    original = batch._pipeline

    async def counting(calls: Any) -> Any:
        sizes.append(len(calls))
        return await original(calls)

    monkeypatch.setattr(batch, "_pipeline", counting)
    return sizes


async def test_calls_of_one_iteration_share_one_round_trip_and_get_their_own_replies(state, monkeypatch):
    echo = fresh_script(state, "return {KEYS[1], ARGV[1]}")
    await state.scripts(echo, ["warm"], ["up"])  # loads the script
    sizes = count_round_trips(state.scripts, monkeypatch)
    replies = await asyncio.gather(*(state.scripts(echo, [f"k{i}"], [str(i)]) for i in range(25)))
    assert replies == [[f"k{i}", str(i)] for i in range(25)]
    assert sizes == [25]


async def test_a_script_the_server_does_not_know_is_loaded_and_sent_again(state, monkeypatch):
    script = fresh_script(state, "return tonumber(ARGV[1]) * 2")
    sizes = count_round_trips(state.scripts, monkeypatch)
    assert await asyncio.gather(*(state.scripts(script, [], [i]) for i in range(3))) == [0, 2, 4]
    assert sizes == [3, 3]  # NOSCRIPT for all three, then the three again after SCRIPT LOAD
    await state.redis.script_flush()  # as after a Redis restart
    assert await state.scripts(script, [], [21]) == 42


async def test_one_failing_script_fails_its_caller_only(state):
    good = fresh_script(state, "return 'ok'")
    bad = fresh_script(state, "return redis.error_reply('nope')")
    results = await asyncio.gather(
        state.scripts(good, [], []), state.scripts(bad, [], []), state.scripts(good, [], []), return_exceptions=True
    )
    assert results[0] == results[2] == "ok"
    assert isinstance(results[1], ResponseError) and "nope" in str(results[1])


async def test_a_caller_that_gives_up_leaves_the_others_their_replies(state):
    slow = fresh_script(state, "return ARGV[1]")
    await state.scripts(slow, [], ["warm"])
    waiting = asyncio.ensure_future(state.scripts(slow, [], ["dropped"]))
    kept = asyncio.ensure_future(state.scripts(slow, [], ["kept"]))
    waiting.cancel()
    assert await kept == "kept"
    assert waiting.cancelled()
    await state.scripts.drain()


async def test_an_unreachable_redis_fails_every_caller_of_the_batch():
    batch = ScriptBatch(lambda: unreachable.redis)
    unreachable = RedisState("redis://127.0.0.1:1/0", uuid.uuid4().hex, "unreachable")
    script = unreachable.redis.register_script("return 1")
    try:
        results = await asyncio.gather(*(batch(script, [], []) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(result, RedisConnectionError) for result in results), results
    finally:
        await unreachable.close()


@pytest.fixture
async def hung_redis() -> AsyncIterator[str]:
    """The URL of a server that accepts connections and never answers (a hung Redis)."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_hung_redis_is_a_503_to_retry_for_the_queue_and_the_cloud_budget(hung_redis, monkeypatch):
    from resayil_gateway.clock import Clock
    from resayil_gateway.errors import ServiceUnavailable
    from resayil_gateway.routing.admission_redis import RedisAdmission
    from resayil_gateway.routing.cloud_budget import RedisCloudBudget
    from resayil_gateway.state import script_batch

    monkeypatch.setattr(script_batch, "SCRIPT_TIMEOUT_S", 0.1)
    state = RedisState(hung_redis, uuid.uuid4().hex, "hung")  # never started: its PING would hang too
    admission = RedisAdmission(state)
    admission.configure("ollama", 1)

    async def no_events(_event: Any) -> None:
        return None

    budget = RedisCloudBudget(state, Clock(), no_events)
    budget.limit = 10
    try:
        async with asyncio.timeout(5):
            with pytest.raises(ServiceUnavailable) as queued:
                async with admission.slot("ollama"):
                    pass
            with pytest.raises(ServiceUnavailable) as spent:
                await budget.try_spend()
        for refused in (queued.value, spent.value):
            assert refused.headers["Retry-After"]
    finally:
        await state.redis.aclose()


async def test_calls_made_while_a_batch_is_in_flight_go_together_in_the_next(state, monkeypatch):
    echo = fresh_script(state, "return ARGV[1]")
    await state.scripts(echo, [], ["warm"])
    sizes: list[int] = []
    original = state.scripts._pipeline
    first_sent, let_go = asyncio.Event(), asyncio.Event()

    async def slow_first(calls: Any) -> Any:
        sizes.append(len(calls))
        if len(sizes) == 1:
            first_sent.set()
            await let_go.wait()
        return await original(calls)

    monkeypatch.setattr(state.scripts, "_pipeline", slow_first)
    first = state.scripts(echo, [], ["first"])
    await first_sent.wait()
    later = [state.scripts(echo, [], [str(i)]) for i in range(5)]
    await asyncio.sleep(0.01)
    assert sizes == [1]  # nothing else is sent while the first batch is out
    let_go.set()
    assert await first == "first"
    assert await asyncio.gather(*later) == [str(i) for i in range(5)]
    assert sizes == [1, 5]


async def test_a_batch_redis_never_answers_is_given_up_and_the_next_one_is_sent(state, monkeypatch):
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from resayil_gateway.state import script_batch

    monkeypatch.setattr(script_batch, "SCRIPT_TIMEOUT_S", 0.1)
    echo = fresh_script(state, "return ARGV[1]")
    await state.scripts(echo, [], ["warm"])
    original = state.scripts._pipeline
    calls_seen = 0
    first_sent = asyncio.Event()

    async def hangs_once(calls: Any) -> Any:
        nonlocal calls_seen
        calls_seen += 1
        if calls_seen == 1:
            first_sent.set()
            await asyncio.Event().wait()  # a Redis that never answers this one
        return await original(calls)

    monkeypatch.setattr(state.scripts, "_pipeline", hangs_once)
    stuck = state.scripts(echo, [], ["stuck"])
    await first_sent.wait()
    after = state.scripts(echo, [], ["after"])
    async with asyncio.timeout(2):
        with pytest.raises(RedisTimeoutError):
            await stuck
        assert await after == "after"


async def test_a_reply_that_comes_after_its_batch_was_given_up_is_never_read_by_the_next(state, monkeypatch):
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from resayil_gateway.state import script_batch

    # Redis itself is busy past the timeout (a slow script), so the given-up reply does arrive, late.
    slow = fresh_script(
        state,
        "local function now() local t = redis.call('TIME') return tonumber(t[1]) * 1e6 + tonumber(t[2]) end "
        "local stop = now() + 500000 while now() < stop do end return 'late'",
    )
    echo = fresh_script(state, "return ARGV[1]")
    await state.scripts(echo, [], ["warm"])
    monkeypatch.setattr(script_batch, "SCRIPT_TIMEOUT_S", 0.2)
    with pytest.raises(RedisTimeoutError):
        await state.scripts.run(slow, [], [])
    monkeypatch.setattr(script_batch, "SCRIPT_TIMEOUT_S", 5.0)
    assert await asyncio.gather(*(state.scripts(echo, [], [str(i)]) for i in range(3))) == ["0", "1", "2"]
    assert await state.scripts(echo, [], ["next"]) == "next"


async def test_a_connection_the_server_closed_between_batches_is_replaced_without_an_error(state):
    echo = fresh_script(state, "return ARGV[1]")
    assert await state.scripts(echo, [], ["first"]) == "first"
    held = state.scripts._held
    assert held is not None
    host, port = held[1]._writer.get_extra_info("sockname")[:2]
    assert await state.redis.client_kill_filter(_type=None, addr=f"{host}:{port}") == 1  # as a Redis restart would
    await asyncio.sleep(0.05)
    assert await state.scripts(echo, [], ["again"]) == "again"
