"""The building blocks of the bundled simulators and sinks: counters to wait on, request tracking, serving on a
socket, and deterministic fake model output."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import ClassVar

import aiohttp
import pytest
from aiohttp import web

from resayil_gateway.simulators import (
    Changes,
    Counters,
    RequestCounters,
    counter_routes,
    json_response,
    last_user_text,
    message_text,
    prompt_tokens,
    reply_words,
    requested_tokens,
    start_app,
    unit_vector,
    write_paced,
)


@dataclass(slots=True)
class QueueCounters(RequestCounters):
    gauges: ClassVar[tuple[str, ...]] = ("in_flight", "waiting")
    waiting: int = 0


async def test_changes_wake_a_waiter_only_when_its_condition_holds():
    changes = Changes()
    items: list[int] = []
    waiter = asyncio.create_task(changes.wait_until(lambda: len(items) >= 2))
    items.append(1)
    changes.touch()
    await asyncio.sleep(0)  # one turn of the loop: the waiter has checked, and one item is not enough
    assert not waiter.done()
    items.append(2)
    changes.touch()
    async with asyncio.timeout(5):
        await waiter


async def test_counters_snapshot_reset_and_wait_until():
    counters = QueueCounters(requests=3, in_flight=1, waiting=2, completed=2)
    assert counters.snapshot() == {
        "requests": 3, "in_flight": 1, "completed": 2, "cancelled": 0, "rejected": 0, "errors": 0, "waiting": 2,
    }  # fmt: skip
    counters.reset()
    assert (counters.requests, counters.completed, counters.in_flight, counters.waiting) == (0, 0, 1, 2)
    waiter = asyncio.create_task(counters.wait_until(lambda c: c.errors == 1))
    counters.errors += 1
    counters.touch()
    async with asyncio.timeout(5):
        await waiter


def test_counters_without_gauges_reset_everything():
    @dataclass(slots=True)
    class Plain(Counters):
        sent: int = 0

    plain = Plain(sent=4)
    plain.reset()
    assert plain.snapshot() == {"sent": 0}


async def test_track_counts_completed_and_cancelled_work():
    counters = RequestCounters()

    async def done() -> str:
        assert counters.in_flight == 1
        return "ok"

    assert await counters.track(done) == "ok"
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(counters.track(hangs))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (counters.completed, counters.cancelled, counters.in_flight) == (1, 1, 0)


async def created(request: web.Request) -> web.Response:
    return json_response({"a": 1}, 201)


async def test_start_app_serves_on_a_free_port_and_write_paced_streams_every_piece():
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await write_paced(response, (piece.encode() for piece in "abc"), float(request.query["rate"]))
        return response

    app = web.Application()
    app.add_routes([web.get("/json", created), web.get("/stream", stream)])
    runner, url = await start_app(app)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/json") as resp:
                assert (resp.status, resp.content_type, await resp.json()) == (201, "application/json", {"a": 1})
            for rate in ("0", "1000"):
                async with session.get(url + "/stream", params={"rate": rate}) as resp:
                    assert await resp.read() == b"abc"
    finally:
        await runner.cleanup()


async def test_counter_routes_show_and_reset_the_counters():
    counters = QueueCounters(requests=2, in_flight=1)
    app = web.Application()
    app.add_routes(counter_routes(lambda app: counters))
    runner, url = await start_app(app)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/_sim/stats") as resp:
                assert (await resp.json())["requests"] == 2
            async with session.post(url + "/_sim/reset") as resp:
                assert (await resp.json())["requests"] == 0
    finally:
        await runner.cleanup()
    assert (counters.requests, counters.in_flight) == (0, 1)


def test_fake_model_output_is_deterministic():
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]},
    ]
    assert message_text(messages[2]["content"]) == "second "
    assert message_text(None) == ""
    assert last_user_text(messages) == "second "
    assert prompt_tokens(messages) == math.ceil(len("firstxsecond ") / 4) + 4 * 3 + 1
    assert requested_tokens("say __sim_tokens_3__ words", 24) == 3
    assert requested_tokens("__sim_tokens_0__", 24) == 1
    assert requested_tokens("nothing", 24) == 24
    words = reply_words("prompt", 4, ("x", "y"))
    assert words == reply_words("prompt", 4, ("x", "y"))
    assert len(words) == 4 and words[0] == "Hello" and words[-1].endswith(".")


def test_unit_vectors_depend_only_on_their_seed():
    vector = unit_vector("model\0text", 64)
    assert vector == unit_vector("model\0text", 64) != unit_vector("model\0other", 64)
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-9)
